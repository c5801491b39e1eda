"""Calibration of predicted label probabilities: expected calibration error and reliability curve.

All label probabilities are pooled (``probs [N, C]`` flattened to ``N * C``
binary predictions, each with its 0/1 target) and put in ``n_bins`` equal-width
bins over ``[0, 1]``: bin ``k`` holds ``edges[k] <= p < edges[k + 1]``, the last
bin also ``p == 1``. In each bin, *confidence* is the mean probability and
*accuracy* the share of positive targets (the observed frequency);

    ECE = sum_k (n_k / n) * |accuracy_k - confidence_k|      (Naeini et al., AAAI 2015)

This is torchmetrics' ``binary_calibration_error(norm="l1")`` on the flattened
arrays (checked in the tests), written out here so that the reliability curve
uses exactly the same bins; the one difference is ``p == 1.0``, which
torchmetrics gives a bin of its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medmodal.evaluation.metrics._arrays import probabilities_and_targets


def _bins(probs: Any, targets: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, mean confidence, observed frequency, edges); empty bins have NaN means."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    p, t = probabilities_and_targets(probs, targets)
    p, t = p.ravel(), t.ravel().astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=n_bins) / counts
        accuracy = np.bincount(index, weights=t, minlength=n_bins) / counts
    return counts, confidence, accuracy, edges


def expected_calibration_error(probs: Any, targets: Any, n_bins: int = 15) -> float:
    """ECE of pooled label probabilities (module docstring).

    Args:
        probs: float ``[N, C]`` (or ``[N]``) probabilities in ``[0, 1]``.
        targets: 0/1 of the same shape.
        n_bins: number of equal-width bins.

    Returns:
        ECE in ``[0, 1]``; 0 is perfectly calibrated.
    """
    counts, confidence, accuracy, _ = _bins(probs, targets, n_bins)
    used = counts > 0
    return float(np.sum(counts[used] / counts.sum() * np.abs(accuracy[used] - confidence[used])))


def reliability_curve(probs: Any, targets: Any, n_bins: int = 15) -> dict[str, list[Any]]:
    """The reliability diagram behind :func:`expected_calibration_error` (same bins).

    Returns:
        ``{"bin_centers": [n_bins], "bin_edges": [n_bins + 1], "accuracy": [n_bins]
        (observed frequency of positives), "confidence": [n_bins] (mean probability),
        "counts": [n_bins]}``; ``accuracy`` / ``confidence`` are ``None`` in empty bins.
    """
    counts, confidence, accuracy, edges = _bins(probs, targets, n_bins)

    def listed(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {
        "bin_centers": ((edges[:-1] + edges[1:]) / 2).tolist(),
        "bin_edges": edges.tolist(),
        "accuracy": listed(accuracy),
        "confidence": listed(confidence),
        "counts": counts.astype(int).tolist(),
    }
