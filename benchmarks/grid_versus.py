"""Paired bootstrap of the macro-AUROC difference between two models of a ``medmodal benchmark`` run,
all their seeds together (the benchmark itself compares each fusion model with the unimodal ones only).

Reads ``RUN/cells/<model>__seed<k>/predictions.npz`` (the full-input probabilities), checks both models
were scored on the same test studies, and resamples those studies together for both
(:func:`medmodal.evaluation.stats.paired_bootstrap`, seeds stacked).

    python benchmarks/grid_versus.py RUN gated_stacked logreg_late_fusion [--resamples 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medmodal.evaluation import stats


def seed_probs(run: Path, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([S, N, C] probabilities over the model's seeds, [N, C] targets, [N] study ids)."""
    cells = sorted((run / "cells").glob(f"{model}__seed*"))
    if not cells:
        raise SystemExit(f"{run}/cells has no cell of model {model!r}")
    arrays = [np.load(cell / "predictions.npz", allow_pickle=False) for cell in cells]
    ids = arrays[0]["ids"]
    if any(not np.array_equal(a["ids"], ids) for a in arrays):
        raise SystemExit(f"the seeds of {model} were scored on different studies")
    return np.stack([a["probs__full"] for a in arrays]), arrays[0]["targets"], ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    probs_a, targets, ids_a = seed_probs(args.run, args.a)
    probs_b, _, ids_b = seed_probs(args.run, args.b)
    if not np.array_equal(ids_a, ids_b):
        raise SystemExit(f"{args.a} and {args.b} were scored on different studies")
    result = stats.paired_bootstrap(
        probs_a, probs_b, targets, "auroc_macro", n_resamples=args.resamples, seed=0
    )
    d = result.difference
    print(f"AUROC macro {args.a} ({len(probs_a)} seeds) - {args.b} ({len(probs_b)} seeds): "
          f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}], bootstrap p = {result.p_value:.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
