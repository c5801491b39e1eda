"""Benchmark cells (``B/cells/<name>__seed<k>/predictions.npz``) against baseline run folders, on the same test studies.

    python benchmarks/cells_vs_baselines.py B --cell fused_default__seed0 --cell transchex__seed0 \
        --baseline RUN_TFIDF --baseline RUN_PIXEL --baseline RUN_LATE --versus-last

Prints macro AUROC with a bootstrap 95 % CI for every cell and baseline, and with ``--versus-last`` the
paired bootstrap difference of each cell minus the last baseline (1,000 resamples, seed 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medmodal.evaluation import stats


def baseline_probs(run: Path, ids: list[str], labels: list[str]) -> np.ndarray:
    """[N, C] probabilities of a baseline run's ``predictions/test.jsonl`` in the cells' study order."""
    rows = {r["id"]: r for r in map(json.loads, (run / "predictions" / "test.jsonl").open())}
    return np.array([[rows[i]["probs"][label] for label in labels] for i in ids])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", type=Path)
    parser.add_argument("--cell", action="append", required=True)
    parser.add_argument("--baseline", action="append", type=Path, default=[])
    parser.add_argument("--versus-last", action="store_true")
    args = parser.parse_args()
    cells = {
        c: np.load(args.benchmark / "cells" / c / "predictions.npz", allow_pickle=False) for c in args.cell
    }
    first = cells[args.cell[0]]
    ids, labels, targets = [str(i) for i in first["ids"]], [str(x) for x in first["labels"]], first["targets"]
    probs = {c: z["probs__full"] for c, z in cells.items()}
    probs |= {run.name: baseline_probs(run, ids, labels) for run in args.baseline}
    for name, p in probs.items():
        ci = stats.bootstrap_ci(p, targets, "auroc_macro")
        print(f"{name}: AUROC macro {ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]")
    if args.versus_last and args.baseline:
        reference = args.baseline[-1].name
        for cell in args.cell:
            d = stats.paired_bootstrap(probs[cell], probs[reference], targets, "auroc_macro").as_dict()
            diff = d["difference"]
            print(f"{cell} - {reference}: {diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]")


if __name__ == "__main__":
    main()
