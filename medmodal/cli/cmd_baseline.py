"""``medmodal baseline``: fit a simple scikit-learn baseline into a run folder, then score it like ``evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodal.errors import UsageError


def cmd_baseline(args: argparse.Namespace) -> None:
    from medmodal.config import apply_overrides, load_config
    from medmodal.training.baselines import fit_baseline

    overrides = {
        "baseline.classifier": args.name,
        "baseline.boxes": args.boxes,
        "baseline.report": args.report,
        "train.seed": args.seed,
        "data.image_size": args.image_size,
        "data.on_bad_row": args.on_bad_row,
    }
    if args.set:
        overrides["baseline.kwargs"] = {**load_config(args.config).baseline.kwargs, **_settings(args.set)}
    config = apply_overrides(load_config(args.config), overrides)
    result = fit_baseline(args.data, config, args.out, force=args.force)
    chosen = {slot: _chosen(info) for slot, info in result.info.items()}
    print(
        f"fitted {result.run.root} in {result.seconds:.1f} s; chosen on the validation split: {json.dumps(chosen)}"
    )
    if args.no_evaluate:
        return
    from medmodal.evaluation.evaluate import evaluate_run, format_metrics_table

    metrics = evaluate_run(result.run.root, args.data, split="test")
    print(format_metrics_table(metrics))
    print(f"metrics written to {Path(result.run.root) / 'metrics.json'}")


def _chosen(info: dict) -> dict:
    """What was chosen on the validation split (C, thresholds), also inside a composite's parts."""
    out = {k: v for k, v in info.items() if k in ("C", "thresholds")}
    out.update({k: _chosen(v) for k, v in info.items() if isinstance(v, dict) and "C" in v})
    return out


def _settings(items: list[str]) -> dict[str, dict]:
    """``NAME.KEY=VALUE`` flags (VALUE read as JSON, else a string) -> ``{NAME: {KEY: VALUE}}``."""
    table: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, field = key.partition(".")
        if not sep or not dot or not name or not field:
            raise UsageError(f"--set {item!r}: expected NAME.KEY=VALUE, e.g. tfidf_logreg.ngram_max=1")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        table.setdefault(name, {})[field] = value
    return table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="fit a scikit-learn baseline (tfidf_logreg, pixel_logreg, linear_probe, late_fusion) and evaluate it",
        description="Fit on the training split, choose C / thresholds on the validation split, score the test "
        "split with the deep models' metrics. See docs/baselines.md.",
    )
    p.add_argument(
        "name", nargs="?", help="classifier baseline: tfidf_logreg, pixel_logreg, linear_probe, late_fusion"
    )
    p.add_argument("--data", required=True, help="dataset folder (with a manifest) or manifest file")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--boxes", help="localization baseline: mean_box")
    p.add_argument("--report", help="report baseline: nearest_report, template_report")
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME.KEY=VALUE",
        help="a baseline setting, e.g. nearest_report.by=image (repeatable)",
    )
    p.add_argument("--config", help="YAML config (data settings, baseline section)")
    p.add_argument("--seed", type=int, help="train.seed (initialisation of the linear probe's encoder)")
    p.add_argument("--image-size", type=int, help="data.image_size (the linear probe's input)")
    p.add_argument("--on-bad-row", choices=["skip", "error"])
    p.add_argument("--force", action="store_true", help="discard an existing run in --out")
    p.add_argument("--no-evaluate", action="store_true", help="fit only")
    p.set_defaults(func=cmd_baseline)
