"""Test metrics with 95% bootstrap CIs (over test studies) for evaluated run folders, deep or baseline.

Reads ``RUN/predictions/test.jsonl`` (written by ``medmodal evaluate`` / ``medmodal baseline``) and the
run's dataset (``RUN/data_summary.json``) for the true boxes; prints a markdown table. ``--split`` and
``--data`` read another split's predictions and the data they came from instead, e.g. those of an
independent synthetic draw (``medmodal evaluate RUN --data DEV --split train``, ``--split train --data DEV``).

- AUROC / F1 (macro, threshold 0.5): :func:`medmodal.evaluation.stats.bootstrap_ci`;
- IoU (mean over true boxes) and hit@0.5, CE F1 (micro, the report labeler of ``evaluate``):
  ``scipy.stats.bootstrap`` percentile intervals, resampling test studies;
- ``--versus A:B``: paired bootstrap of the AUROC difference (A - B) on the same studies, and of
  the CE F1 difference when both runs wrote reports.

    .venv/bin/python benchmarks/baseline_cis.py runs/demo/fused runs/demo/baseline_fused --versus baseline_fused:fused
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

from medmodal.evaluation import stats


def read_run(run: Path, split: str = "test", data: Path | None = None) -> dict:
    rows = [json.loads(line) for line in (run / "predictions" / f"{split}.jsonl").read_text().splitlines()]
    labels = json.loads((run / "labels.json").read_text())["labels"]
    probs = np.array([[r["probs"][name] for name in labels] for r in rows])
    targets = np.array([[name in r["labels"] for name in labels] for r in rows], dtype=int)
    boxes = np.array([[r["boxes"][name] for name in labels] for r in rows]) if "boxes" in rows[0] else None
    generated = [r["generated"] for r in rows] if "generated" in rows[0] else None
    return {
        "ids": [r["id"] for r in rows],
        "labels": labels,
        "probs": probs,
        "targets": targets,
        "boxes": boxes,
        "generated": generated,
        "references": [r["reference"] for r in rows],
        "data": data or json.loads((run / "data_summary.json").read_text())["data"],
        "split": split,
        "config": run / "config.yaml",
    }


def interval(per_study_stat, n: int, resamples: int) -> tuple[float, float]:
    result = bootstrap(
        (np.arange(n),),
        per_study_stat,
        vectorized=False,
        n_resamples=resamples,
        method="percentile",
        random_state=0,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def box_stats(run: dict, resamples: int) -> dict:
    from medmodal.config import load_config
    from medmodal.data.pipeline import read_dataset, true_boxes_normalised
    from medmodal.evaluation.metrics import localization_metrics

    config = load_config(run["config"])
    by_id = {s.id: s for s in read_dataset(run["data"], config, labels=run["labels"]).split(run["split"])}
    truth = true_boxes_normalised([by_id[i] for i in run["ids"]], run["labels"])
    ious, hits, counts = np.zeros(len(truth)), np.zeros(len(truth)), np.zeros(len(truth))
    for i, study in enumerate(truth):
        if study:
            m = localization_metrics(run["boxes"][i : i + 1], [study])
            counts[i], ious[i], hits[i] = (
                m["n_boxes"],
                m["iou_mean"] * m["n_boxes"],
                m["hit_at_0_5"] * m["n_boxes"],
            )
    iou = interval(lambda idx: ious[idx].sum() / max(counts[idx].sum(), 1), len(truth), resamples)
    hit = interval(lambda idx: hits[idx].sum() / max(counts[idx].sum(), 1), len(truth), resamples)
    return {"iou": (ious.sum() / counts.sum(), *iou), "hit": (hits.sum() / counts.sum(), *hit)}


def ce_counts(run: dict, uncertain_as: str = "positive") -> np.ndarray:
    """[N, 3] per-study true positives, false positives and false negatives of the generated reports'
    findings against the references' (the report labeler of ``evaluate``)."""
    from medmodal.labeling import default_labeler, to_binary

    labeler = default_labeler()
    names = list(labeler.findings)
    ref = to_binary(labeler.label_many(run["references"]), names, uncertain_as)
    gen = to_binary(labeler.label_many(run["generated"]), names, uncertain_as)
    return np.stack([(ref & gen).sum(1), ((1 - ref) & gen).sum(1), (ref & (1 - gen)).sum(1)], axis=1)


def pooled_f1(counts: np.ndarray) -> float:
    tp, fp, fn = counts.sum(0)
    return 2 * tp / max(2 * tp + fp + fn, 1)


def ce_stats(counts: np.ndarray, resamples: int) -> tuple[float, float, float]:
    return (pooled_f1(counts), *interval(lambda idx: pooled_f1(counts[idx]), len(counts), resamples))


def ce_difference(a: np.ndarray, b: np.ndarray, resamples: int) -> tuple[float, float, float]:
    """CE F1 of A - B with a paired bootstrap interval (the same resampled studies for both)."""

    def diff(idx):
        return pooled_f1(a[idx]) - pooled_f1(b[idx])

    return (diff(np.arange(len(a))), *interval(diff, len(a), resamples))


def fmt(triple) -> str:
    return "–" if triple is None else f"{triple[0]:.3f} [{triple[1]:.3f}, {triple[2]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument(
        "--versus", action="append", default=[], help="A:B (run folder names) for a paired AUROC test"
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--split", default="test", help="the predictions/SPLIT.jsonl to read (default test)")
    parser.add_argument(
        "--data",
        type=Path,
        help="the data those predictions came from (`medmodal evaluate RUN --data DATA`); "
        "default the run's own",
    )
    args = parser.parse_args()
    runs = {run.name: read_run(run, args.split, args.data) for run in args.runs}
    print(
        "| run | AUROC macro [95% CI] | F1 macro [95% CI] | IoU mean [95% CI] | hit@0.5 [95% CI] | CE F1 [95% CI] |"
    )
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        cells = []
        for metric in ("auroc_macro", "f1_macro"):
            ci = stats.bootstrap_ci(run["probs"], run["targets"], metric, n_resamples=args.resamples, seed=0)
            cells.append(fmt((ci.estimate, ci.low, ci.high)))
        boxes = box_stats(run, args.resamples) if run["boxes"] is not None else None
        cells += [fmt(boxes and boxes["iou"]), fmt(boxes and boxes["hit"])]
        if run["generated"] is not None:
            run["ce_counts"] = ce_counts(run)
        cells.append(fmt(ce_stats(run["ce_counts"], args.resamples)) if run["generated"] is not None else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for pair in args.versus:
        a, b = pair.split(":")
        if runs[a]["ids"] != runs[b]["ids"]:
            raise SystemExit(f"{a} and {b} were evaluated on different studies")
        cmp = stats.paired_bootstrap(
            runs[a]["probs"],
            runs[b]["probs"],
            runs[a]["targets"],
            "auroc_macro",
            n_resamples=args.resamples,
            seed=0,
        )
        d = cmp.difference
        print(
            f"\nAUROC macro {a} - {b}: {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}], bootstrap p = {cmp.p_value:.3g}"
        )
        if "ce_counts" in runs[a] and "ce_counts" in runs[b]:
            estimate, low, high = ce_difference(runs[a]["ce_counts"], runs[b]["ce_counts"], args.resamples)
            print(f"CE F1 {a} - {b}: {estimate:+.3f} [{low:+.3f}, {high:+.3f}] (paired bootstrap)")


if __name__ == "__main__":
    main()
