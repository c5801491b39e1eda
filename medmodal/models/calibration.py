"""Post-hoc recalibration of the label probabilities: per-label Platt scaling.

Models trained with the positive-weighted loss (``train.class_imbalance: pos_weight``, the
default) rank well but report probabilities that are too high: the weight shifts each label's
logit by about ``log(pos_weight)``. Platt scaling (Platt 1999) fits, per label ``c``, on a held-out
split,

    p_c = sigmoid(a_c * z_c + b_c),        a_c = exp(s_c) > 0,

by minimising the binary cross-entropy against Platt's smoothed targets ((N+ + 1) / (N+ + 2) for
positives, 1 / (N- + 2) for negatives), which keeps the fit finite when a small validation split
separates a label perfectly. ``a_c`` is kept at or above ``MIN_SCALE``: a label whose scores
carry no signal on the fitting split would otherwise be flattened to a constant (ties, AUROC
0.5); the floor keeps every label's ranking (AUROC does not change) and such labels are listed
in ``details["at_scale_floor"]``. Probabilities and thresholded metrics do change. A label whose fitting split has only
positives or only negatives keeps the identity (``a = 1, b = 0``).

Why written here: scikit-learn's ``CalibratedClassifierCV`` wraps an estimator it refits, and its
``_SigmoidCalibration`` is private; the fit is a two-parameter logistic regression per label,
done for all labels at once with torch's L-BFGS.

Inside the model a :class:`LogitCalibration` applies it: persistent buffers, so the calibration is
saved with the weights (``model.state_dict()``, checkpoints); :func:`fill_missing_calibration`
gives weights saved before that the identity.

The fit on a run's predictions and ``RUN/calibration.json`` are written by ``medmodal calibrate``
(:mod:`medmodal.experiments.calibrate`); ``load_trained`` applies the file inside the model
(evaluate, predict, serve, explain, ONNX export).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmodal.runs import write_json_atomic

CALIBRATION_FILE = "calibration.json"
MIN_SCALE = 0.05


@dataclass
class PlattScaling:
    """Per-label ``logit * scale + bias``; ``details`` records how and on what it was fitted."""

    labels: list[str]
    scale: list[float]
    bias: list[float]
    details: dict[str, Any] = field(default_factory=dict)
    # Per-label decision thresholds on the calibrated probabilities (None: evaluate.threshold).
    thresholds: list[float] | None = None

    def apply_to_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """[N, C] probabilities of the uncalibrated model -> [N, C] calibrated probabilities."""
        z = probability_logits(probs)
        return 1.0 / (1.0 + np.exp(-(z * np.asarray(self.scale) + np.asarray(self.bias))))

    def save(self, path: str | Path) -> None:
        write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> PlattScaling:
        data = json.loads(Path(path).read_text())
        try:
            thresholds = data.get("thresholds")
            scaling = cls(labels=list(data["labels"]), scale=[float(v) for v in data["scale"]],
                          bias=[float(v) for v in data["bias"]], details=dict(data.get("details", {})),
                          thresholds=None if thresholds is None else [float(v) for v in thresholds])  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a calibration file ({err})") from err
        if not (len(scaling.labels) == len(scaling.scale) == len(scaling.bias)):
            raise ValueError(f"{path}: labels, scale and bias differ in length")
        if any(a <= 0 for a in scaling.scale):
            raise ValueError(f"{path}: every scale must be positive")
        if scaling.thresholds is not None and (
            len(scaling.thresholds) != len(scaling.labels)
            or not all(0.0 <= t <= 1.0 for t in scaling.thresholds)
        ):
            raise ValueError(f"{path}: thresholds must be one value in [0, 1] per label")
        return scaling


def probability_logits(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps] (float32 sigmoids saturate)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def fit_platt_scaling(
    logits: np.ndarray, targets: np.ndarray, labels: list[str], *, max_iter: int = 200
) -> PlattScaling:
    """Fit per-label Platt scaling.

    Args:
        logits: [N, C] uncalibrated logits on the fitting split.
        targets: [N, C] 0/1.
        labels: the C label names.

    Returns:
        :class:`PlattScaling` (identity for labels with a single class in ``targets``).
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.float64)
    if z.shape != y.shape or z.ndim != 2 or z.shape[1] != len(labels):
        raise ValueError(f"logits {tuple(z.shape)} and targets {tuple(y.shape)} must be [N, {len(labels)}]")
    positives = y.sum(dim=0)
    negatives = y.shape[0] - positives
    fittable = (positives > 0) & (negatives > 0)
    # Platt's prior correction of the 0/1 targets (as scikit-learn's sigmoid calibration does).
    y = torch.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    log_scale = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, bias], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        scale = log_scale.exp().clamp(min=MIN_SCALE)
        per_label = F.binary_cross_entropy_with_logits(z * scale + bias, y, reduction="none").mean(dim=0)
        loss = per_label[fittable].sum()
        loss.backward()
        return loss

    if bool(fittable.any()):
        optimizer.step(closure)
    fitted_scale = log_scale.detach().exp()
    scale = torch.where(fittable, fitted_scale.clamp(min=MIN_SCALE), torch.ones_like(log_scale))
    shift = torch.where(fittable, bias.detach(), torch.zeros_like(bias))
    details = {
        "method": "platt",
        "identity_labels": [n for n, f in zip(labels, fittable) if not f],
        "at_scale_floor": [n for n, f, a in zip(labels, fittable, fitted_scale) if f and a <= MIN_SCALE],
    }
    return PlattScaling(labels=list(labels), scale=scale.tolist(), bias=shift.tolist(), details=details)


class LogitCalibration(nn.Module):
    """Per-label ``logit * scale + bias`` (Platt scaling) of [B, C] classification logits; the
    identity until :meth:`set`. ``scale`` / ``bias`` [C] are persistent buffers (in ``state_dict()``)."""

    scale: Tensor
    bias: Tensor

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(num_labels))
        self.register_buffer("bias", torch.zeros(num_labels))

    def forward(self, logits: Tensor) -> Tensor:
        """[B, C] -> [B, C]."""
        return logits * self.scale + self.bias

    @property
    def is_identity(self) -> bool:
        return bool((self.scale == 1).all()) and bool((self.bias == 0).all())

    def set(self, scale: Tensor | list[float], bias: Tensor | list[float]) -> None:
        """Use ``scale`` (> 0, so each label's ranking and AUROC are kept) and ``bias``, [C] each."""
        scale = torch.as_tensor(scale, dtype=self.scale.dtype, device=self.scale.device)
        bias = torch.as_tensor(bias, dtype=self.bias.dtype, device=self.bias.device)
        if scale.shape != self.scale.shape or bias.shape != self.bias.shape:
            got = f"{tuple(scale.shape)}, {tuple(bias.shape)}"
            raise ValueError(f"calibration needs {self.scale.numel()} scales and biases, got {got}")
        if not bool((scale > 0).all()):
            raise ValueError(
                "calibration scales must be positive (a negative one reverses a label's ranking)"
            )
        self.scale.copy_(scale)
        self.bias.copy_(bias)


def fill_missing_calibration(state_dict: dict[str, Tensor], module: nn.Module) -> dict[str, Tensor]:
    """``state_dict`` (of ``module``) with the identity for every :class:`LogitCalibration` buffer it
    lacks (weights saved before the calibration was); buffers it holds are kept. Changed in place
    and returned. The identity is made on the CPU from the buffer's shape (``module`` may be on ``meta``)."""
    for name, part in module.named_modules():
        if isinstance(part, LogitCalibration):
            prefix = f"{name}." if name else ""
            shape = part.scale.shape
            state_dict.setdefault(f"{prefix}scale", torch.ones(shape))
            state_dict.setdefault(f"{prefix}bias", torch.zeros(shape))
    return state_dict
