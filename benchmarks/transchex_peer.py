"""Our fused default vs MONAI's Transchex (medmodal/models/peers/transchex.py) on the same grid.

Runs ``benchmarks/grids/transchex_peer.yaml`` with ``medmodal benchmark``'s own runner (same data,
splits, budget, test metrics with bootstrap CIs), and adds for each cell

- the **CPU seconds of its training** (this process and its children, ``resource.getrusage``;
  other jobs on a shared machine do not count) and per epoch, and their ratio Transchex / ours;
- the **validation** macro AUROC with a bootstrap CI (the test split's is in the grid's results).

    medmodal synth /tmp/peer/data --n 1000 --seed 0 --image-size 64
    OMP_NUM_THREADS=1 python benchmarks/transchex_peer.py --data /tmp/peer/data --out /tmp/peer/bench \\
        --json results/transchex_peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
from pathlib import Path

import numpy as np

GRID = Path(__file__).parent / "grids" / "transchex_peer.yaml"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_training(records: dict[str, float]):
    """The benchmark runner's ``train`` wrapped to record each cell's training CPU seconds under its folder name."""
    from medmodal.experiments import benchmark

    original = benchmark.train

    def train(data, config, out, **kwargs):
        start = cpu_seconds()
        result = original(data, config, out, **kwargs)
        records[str(Path(out).parent.name)] = cpu_seconds() - start
        return result

    benchmark.train = train


def validation_auroc(run_dir: Path, data: Path, resamples: int) -> dict[str, float]:
    """Macro AUROC of the run on the validation split, with a 95 % bootstrap interval."""
    from medmodal.evaluation.evaluate import predict_split
    from medmodal.evaluation.stats import bootstrap_ci
    from medmodal.training.loading import load_trained

    trained = load_trained(run_dir)
    studies = trained.studies(data, "val")
    preds = predict_split(trained, studies, beam_size=1, max_tokens=8, batch_size=64, generate=False,
                          progress=False)  # fmt: skip
    ci = bootstrap_ci(preds.probs, preds.targets, "auroc_macro", n_resamples=resamples)
    return {"auroc_macro": round(float(ci.estimate), 4), "ci_low": round(float(ci.low), 4),
            "ci_high": round(float(ci.high), 4), "studies": len(studies)}  # fmt: skip


def paired_test_difference(out: Path, a: str = "fused_default", b: str = "transchex") -> dict[str, float]:
    """Test macro AUROC of cell ``a`` minus cell ``b`` (seed 0), paired bootstrap over the same studies."""
    from medmodal.evaluation.stats import paired_bootstrap
    from medmodal.experiments.benchmark_results import load_cell_predictions

    pa, pb = (load_cell_predictions(out / "cells" / f"{name}__seed0") for name in (a, b))
    diff = paired_bootstrap(pa["probs__full"], pb["probs__full"], pa["targets"], "auroc_macro")
    return {"difference": round(diff.difference.estimate, 4), "ci_low": round(diff.difference.low, 4),
            "ci_high": round(diff.difference.high, 4), "p_value": diff.p_value}  # fmt: skip


def main() -> None:
    from medmodal.experiments.benchmark import run_benchmark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", type=Path, default=GRID)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cpu: dict[str, float] = {}
    timed_training(cpu)
    run_benchmark(args.data, args.grid, args.out, report=False)
    summary = json.loads((args.out / "summary.json").read_text())
    cells = {}
    for folder in sorted((args.out / "cells").iterdir()):
        done = json.loads((folder / "run" / "training_done.json").read_text())
        model = json.loads((folder / "cell.json").read_text())["model"]
        ci = summary["models"][model]["ci"]["auroc_macro"]
        cells[folder.name] = {
            "model": model, "epochs": done["epochs_run"], "train_cpu_seconds": round(cpu[folder.name], 1)
            if folder.name in cpu else None, "train_wall_seconds": done["seconds"],
            "val": validation_auroc(folder / "run", args.data, 1000),
            "test": {"auroc_macro": round(ci["estimate"], 4), "ci_low": round(ci["low"], 4), "ci_high": round(ci["high"], 4)},
        }  # fmt: skip
        if cells[folder.name]["train_cpu_seconds"] is not None:
            cells[folder.name]["train_cpu_seconds_per_epoch"] = round(
                cells[folder.name]["train_cpu_seconds"] / done["epochs_run"], 1
            )
    per_epoch = {c["model"]: c.get("train_cpu_seconds_per_epoch") for c in cells.values()}
    result = {"grid": str(args.grid), "data": str(args.data), "cells": cells,
              "cpu_per_epoch_ratio_transchex_over_fused": round(per_epoch["transchex"] / per_epoch["fused_default"], 2)
              if per_epoch.get("transchex") and per_epoch.get("fused_default") else None,
              "test_auroc_fused_minus_transchex": paired_test_difference(args.out),
              "load_average_at_end": os.getloadavg(), "numpy": np.__version__}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
