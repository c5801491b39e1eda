"""``medmodal benchmark`` (a grid of models, statistics, HTML report) and ``medmodal validate-labeler``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medmodal.errors import UsageError


def cmd_benchmark(args: argparse.Namespace) -> None:
    from medmodal.experiments.benchmark import load_grid, run_benchmark

    grid, base_dir = load_grid(args.config)
    if args.seeds:
        grid = grid.model_copy(update={"seeds": [int(s) for s in args.seeds.split(",")]})
    if args.models:
        wanted = args.models.split(",")
        unknown = [m for m in wanted if m not in grid.models]
        if unknown:
            raise UsageError(f"--models: {unknown} are not models of the grid ({', '.join(grid.models)})")
        loso = grid.leave_one_site_out.model_copy(
            update={"models": [m for m in grid.leave_one_site_out.models if m in wanted]}
        )
        grid = grid.model_copy(
            update={"models": {m: grid.models[m] for m in wanted}, "leave_one_site_out": loso}
        )
    executor = {
        k: v
        for k, v in {
            "name": args.executor,
            "address": args.address,
            "cpus_per_cell": args.cpus_per_cell,
            "gpus_per_cell": args.gpus_per_cell,
        }.items()
        if v is not None
    }
    if executor:
        grid = grid.model_copy(update={"executor": grid.executor.model_copy(update=executor)})
    from medmodal.experiments.benchmark import grid_from_dict

    grid = grid_from_dict(grid.model_dump(mode="json"), "the grid with command-line changes", base_dir)
    result = run_benchmark(args.data, grid, args.out, progress=False)
    summary = json.loads((result.out / "summary.json").read_text())
    print(_headline(summary))
    print(
        f"\n{len(result.cells_run)} of {len(result.cells)} cells run now ({result.seconds:.0f} s); "
        f"report: {result.report}\nresults: {result.out / 'results.csv'}"
    )


def _headline(summary: dict) -> str:
    best = summary["best_unimodal"]
    vs = {c["fusion"]: c for c in summary["comparisons"] if c["baseline"] == best}
    lines = [
        f"{'model':<26}{'AUROC macro [95% CI]':<28}{'F1 macro':<10}Δ AUROC vs {best} [CI]   p (bootstrap / DeLong)"
    ]
    for model, e in summary["models"].items():
        ci = e["ci"]["auroc_macro"]
        auroc = (
            "–"
            if ci["estimate"] is None
            else f"{ci['estimate']:.3f} [{ci['low'] or float('nan'):.3f}, {ci['high'] or float('nan'):.3f}]"
        )
        f1 = e["ci"]["f1_macro"]["estimate"]
        line = f"{model:<26}{auroc:<28}{'–' if f1 is None else f'{f1:.3f}':<10}"
        if model in vs:
            d = vs[model]["paired"]["auroc_macro"]
            diff = d["difference"]
            if diff["low"] is not None:
                line += f"{diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]   {d['p_value']:.2g} / {vs[model]['delong_p_max']:.2g}"
        lines.append(line)
    return "\n".join(lines)


def cmd_validate_labeler(args: argparse.Namespace) -> None:
    from medmodal.labeling.validate_openi import format_validation, validate_on_openi

    result = validate_on_openi(
        args.source,
        uncertain_as=args.uncertain_as,
        fields=args.fields.split(","),
        probable_as=args.probable_as,
        half=args.half,
        list_errors=bool(args.errors),
    )
    if args.errors:
        Path(args.errors).write_text(json.dumps(result.pop("errors"), indent=2) + "\n")
    print(format_validation(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.out}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="train and evaluate a grid of models (unimodal vs fusion, missing modalities, sites); writes report.html",
    )
    p.add_argument("--data", required=True, help="dataset folder (with a manifest) or manifest file")
    p.add_argument(
        "--config", help="grid YAML (default: the built-in demo grid, benchmarks/grids/default.yaml)"
    )
    p.add_argument("--out", required=True, help="benchmark folder (resumed if it exists)")
    p.add_argument("--seeds", help="comma-separated seeds, replacing the grid's")
    p.add_argument("--models", help="comma-separated subset of the grid's models")
    p.add_argument(
        "--executor",
        choices=["serial", "ray"],
        help="run the cells one after the other here (serial, the default) or as Ray tasks "
        "(needs medmodal[distributed]; docs/distributed.md)",
    )
    p.add_argument(
        "--address", help="Ray cluster to join (e.g. auto, ray://head:10001); default: a local Ray"
    )
    p.add_argument(
        "--cpus-per-cell", type=float, help="CPUs one cell's Ray task holds (grid key executor.cpus_per_cell)"
    )
    p.add_argument(
        "--gpus-per-cell", type=float, help="GPUs one cell's Ray task holds (grid key executor.gpus_per_cell)"
    )
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser(
        "validate-labeler",
        help="agreement of the report labeler with the Open-i MeSH tags (precision / recall / F1 per finding)",
    )
    p.add_argument(
        "--source",
        help="NLMCXR_reports.tgz, a folder of XMLs or the torchxrayvision wheel "
        "(default: the archive `make setup` put in .cache/openi)",
    )
    p.add_argument("--fields", default="findings,impression", help="report sections the labeler reads")
    p.add_argument(
        "--uncertain-as",
        choices=["positive", "negative"],
        default="negative",
        help="count uncertain mentions ('possible', 'may represent') as present or absent "
        "(default: absent, the MeSH indexers' convention measured on the dev half)",
    )
    p.add_argument(
        "--probable-as",
        choices=["positive", "uncertain"],
        default="positive",
        help="status of high-likelihood hedges ('probable', 'likely'; default: positive, the "
        "indexers' convention measured on the dev half)",
    )
    p.add_argument(
        "--half",
        choices=["all", "dev", "heldout"],
        default="all",
        help="score one half of the fixed split by report-id hash (dev: for error analysis; "
        "heldout: the reported figure)",
    )
    p.add_argument(
        "--errors",
        help="write the false positives / negatives per finding as JSON here (with --half dev only)",
    )
    p.add_argument("--out", help="also write the full result as JSON here")
    p.set_defaults(func=cmd_validate_labeler)
