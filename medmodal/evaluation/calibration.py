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

``medmodal calibrate RUN --data DIR`` fits on the validation split, reports the expected
calibration error before and after on that split and on the test split, and writes
``RUN/calibration.json``; from then on ``load_trained`` (evaluate, predict, serve, explain,
ONNX export) applies it inside the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
        from medmodal.runs import write_json_atomic

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
            len(scaling.thresholds) != len(scaling.labels) or not all(0.0 <= t <= 1.0 for t in scaling.thresholds)
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


def calibrate_run(run_dir: str | Path, data: str | Path, *, fit_split: str = "val", eval_split: str | None = "test",
                  bins: int = 15, thresholds: str = "none") -> PlattScaling:  # fmt: skip
    """Fit Platt scaling of a trained run on ``fit_split`` of ``data`` and write ``RUN/calibration.json``.

    ``thresholds``: ``"none"`` keeps the config's single ``evaluate.threshold``; ``"best_f1"``
    also picks, per label, the threshold on the calibrated probabilities that maximises F1 on
    ``fit_split`` (used from then on by evaluate and predict).

    ``details`` gets the expected calibration error (``bins`` equal-width bins, pooled labels)
    and macro F1 before and after (and with the tuned thresholds), on ``fit_split`` and on
    ``eval_split`` (if it has studies).
    """
    from medmodal.evaluation.evaluate import predict_split
    from medmodal.evaluation.metrics import (
        best_f1_thresholds,
        classification_metrics,
        expected_calibration_error,
    )

    if thresholds not in ("none", "best_f1"):
        raise ValueError(f"thresholds must be 'none' or 'best_f1', not {thresholds!r}")
    from medmodal.data.pipeline import read_dataset
    from medmodal.training.loading import load_trained

    trained = load_trained(run_dir, apply_calibration=False)
    dataset = read_dataset(data, trained.config, labels=trained.labels)
    cfg = trained.config

    def predictions(split: str) -> tuple[np.ndarray, np.ndarray] | None:
        studies = dataset.split(split)
        if not studies:
            return None
        preds = predict_split(trained, studies, beam_size=1, max_tokens=4, batch_size=cfg.evaluate.batch_size,
                              generate=False, progress=False)  # fmt: skip
        return preds.probs, preds.targets

    fitted_on = predictions(fit_split)
    if fitted_on is None:
        raise ValueError(f"{data}: split '{fit_split}' is empty; nothing to fit the calibration on")
    scaling = fit_platt_scaling(probability_logits(fitted_on[0]), fitted_on[1], trained.labels)
    threshold = cfg.evaluate.threshold
    if thresholds == "best_f1":
        scaling.thresholds = best_f1_thresholds(scaling.apply_to_probabilities(fitted_on[0]), fitted_on[1],
                                                default=threshold).tolist()  # fmt: skip

    def scores(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        calibrated = scaling.apply_to_probabilities(probs)

        def f1(p: np.ndarray, thr: Any) -> float:
            return classification_metrics(p, targets, trained.labels, threshold=thr)["f1_macro"]

        row = {
            "n_studies": len(targets),
            "ece_before": expected_calibration_error(probs, targets, n_bins=bins),
            "ece_after": expected_calibration_error(calibrated, targets, n_bins=bins),
            "f1_macro_before": f1(probs, threshold),
            "f1_macro_after": f1(calibrated, threshold),
        }
        if scaling.thresholds is not None:
            row["f1_macro_tuned_thresholds"] = f1(calibrated, np.asarray(scaling.thresholds))
        return row

    scaling.details.update({"data": str(Path(data).resolve()), "fit_split": fit_split, "bins": bins,
                            "checkpoint": str(trained.checkpoint), fit_split: scores(*fitted_on)})  # fmt: skip
    if eval_split and eval_split != fit_split:
        held_out = predictions(eval_split)
        if held_out is not None:
            scaling.details[eval_split] = scores(*held_out)
    scaling.save(trained.run.root / CALIBRATION_FILE)
    return scaling
