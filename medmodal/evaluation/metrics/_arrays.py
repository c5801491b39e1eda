"""Input coercion shared by the metric functions: numpy arrays, lists or torch tensors in, numpy out."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(x: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``x`` (numpy array, nested list or torch tensor, any device) as a numpy array of ``dtype``."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be read as a {np.dtype(dtype).name} array ({err})") from None


def probabilities_and_targets(probs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``probs`` float [N, C] in [0, 1] and ``targets`` int [N, C] in {0, 1} (1-D inputs become C = 1)."""
    p = as_numpy(probs, "probs")
    t = as_numpy(targets, "targets")
    if p.ndim == 1:
        p = p[:, None]
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"probs {p.shape} and targets {t.shape} must both be [N, C]")
    if p.shape[0] == 0:
        raise ValueError("no samples (N = 0)")
    if not np.isfinite(p).all():
        raise ValueError("probs contain NaN or inf")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"probs must be probabilities in [0, 1] (got {p.min():.3g} .. {p.max():.3g}); apply a sigmoid to logits"
        )
    if not np.isin(t, (0, 1)).all():
        raise ValueError("targets must be 0 / 1")
    return p, t.astype(np.int64)


def none_if_nan(x: float) -> float | None:
    """A plain float, or ``None`` for NaN (JSON has no NaN)."""
    x = float(x)
    return None if np.isnan(x) else x


def mean_or_none(values: list[float | None]) -> float | None:
    """Mean of the defined values; ``None`` if there are none."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
