"""``medmodal calibrate``: fit per-label Platt scaling of a trained run on a held-out split.

The fit itself is :func:`medmodal.models.calibration.fit_platt_scaling`; this module predicts the
run's probabilities on ``fit_split``, fits, reports the expected calibration error and macro F1
before and after on that split and on the test split, and writes ``RUN/calibration.json``; from
then on ``load_trained`` (evaluate, predict, serve, explain, ONNX export) applies it inside the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medmodal.evaluation.evaluate import predict_split
from medmodal.evaluation.metrics import best_f1_thresholds, classification_metrics, expected_calibration_error
from medmodal.models.calibration import CALIBRATION_FILE, PlattScaling, fit_platt_scaling, probability_logits
from medmodal.training.loading import load_trained


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
    if thresholds not in ("none", "best_f1"):
        raise ValueError(f"thresholds must be 'none' or 'best_f1', not {thresholds!r}")
    trained = load_trained(run_dir, apply_calibration=False)
    dataset = trained.read_data(data)
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
