"""Scoring one split's predictions: the metrics of every task and the per-study predictions file.

Shared by deep runs (:func:`medmodal.evaluation.evaluate.predict_split`) and scikit-learn baselines
(:func:`medmodal.evaluation.evaluate_baseline.predict_baseline_split`), which both return
:class:`SplitPredictions`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medmodal.data.pipeline import true_boxes_normalised
from medmodal.data.types import Study
from medmodal.evaluation.metrics import (
    classification_metrics,
    clinical_efficacy,
    expected_calibration_error,
    generation_metrics,
    localization_metrics,
    tokenize,
)
from medmodal.evaluation.metrics.localization import detection_metrics
from medmodal.labeling import default_labeler
from medmodal.models.types import Detections

log = logging.getLogger(__name__)


@dataclass
class SplitPredictions:
    """Model outputs over one split, aligned with ``studies``.

    probs: [N, C]; targets: [N, C]; boxes: [N, C, 4] normalised xyxy, the top box per finding
    (None without a localization head); generated / references: N strings (None without a decoder);
    detections: per study a list of (class index, normalised xyxy, score), several per finding
    (None: scored from ``boxes``, each finding's box with its probability; see
    :func:`study_detections`).
    """

    studies: list[Study]
    probs: np.ndarray
    targets: np.ndarray
    image_logits_probs: np.ndarray | None
    text_logits_probs: np.ndarray | None
    boxes: np.ndarray | None
    generated: list[str] | None
    references: list[str]
    detections: list[list[tuple[int, list[float], float]]] | None = None


def check_hide_masks(hide: dict[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    """``hide`` validated: keys ``image`` / ``text``, bool arrays of length ``n``."""
    checked = {}
    for modality, mask in (hide or {}).items():
        if modality not in ("image", "text"):
            raise ValueError(f"hide: unknown modality {modality!r}; use 'image' or 'text'")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"hide[{modality!r}]: one value per study ({n}), got shape {mask.shape}")
        checked[modality] = mask
    return checked


def detections_as_lists(detections: Detections) -> list[list[tuple[int, list[float], float]]]:
    """Batched :class:`Detections` -> per study the list of (class index, xyxy, score), padding dropped."""
    labels, boxes, scores = (
        t.cpu().tolist() for t in (detections.labels, detections.boxes, detections.scores)
    )
    return [
        [(c, box, score) for c, box, score in zip(row_labels, row_boxes, row_scores) if c >= 0]
        for row_labels, row_boxes, row_scores in zip(labels, boxes, scores)
    ]


def study_detections(preds: SplitPredictions) -> list[list[tuple[int, list[float], float]]]:
    """The scored boxes of each study: the model's detections, or (a predictor with one box per
    finding and no scores of its own, e.g. the mean-box baseline) each finding's box scored by the
    finding's probability."""
    if preds.detections is not None:
        return preds.detections
    assert preds.boxes is not None  # called for predictions with boxes (score_predictions)
    boxes = preds.boxes
    return [
        [(c, boxes[i, c].tolist(), float(preds.probs[i, c])) for c in range(boxes.shape[1])]
        for i in range(len(preds.studies))
    ]


def localization_scores(preds: SplitPredictions, labels: list[str]) -> dict[str, Any]:
    """IoU / hit@0.5 of the top box per finding, and COCO mAP + FROC of the scored detections,
    over the studies that have an image (a box needs one)."""
    truth = true_boxes_normalised(preds.studies, labels)
    imaged = [i for i, s in enumerate(preds.studies) if s.image is not None]
    metrics = localization_metrics(preds.boxes, truth, labels)
    detections = study_detections(preds)
    metrics["detection"] = detection_metrics(
        [detections[i] for i in imaged], [truth[i] for i in imaged], labels
    )
    for key in ("map_50", "map_50_95", "froc_mean"):
        metrics[key] = metrics["detection"][key]
    return metrics


def score_predictions(
    preds: SplitPredictions,
    labels: list[str],
    *,
    threshold: float | list[float],
    uncertain_as: Literal["positive", "negative"],
    calibrated: bool = False,
) -> dict[str, Any]:
    """All metrics of one split as a nested dict (``classification``, ``localization``, ``generation``).

    ``calibrated``: whether the probabilities went through the run's calibration (RUN/calibration.json).
    """
    metrics: dict[str, Any] = {
        "n_studies": len(preds.studies),
        "classification": classification_metrics(preds.probs, preds.targets, labels, threshold=threshold),
    }
    # Pooled-label expected calibration error (15 bins); ``calibrated``: RUN/calibration.json applied.
    metrics["classification"]["ece"] = expected_calibration_error(preds.probs, preds.targets)
    metrics["classification"]["calibrated"] = calibrated
    for name, unimodal in (("image_head", preds.image_logits_probs), ("text_head", preds.text_logits_probs)):
        if unimodal is not None:
            metrics["classification"][f"{name}_auroc_macro"] = classification_metrics(
                unimodal, preds.targets, labels, threshold=threshold
            )["auroc_macro"]
    if preds.boxes is not None:
        metrics["localization"] = localization_scores(preds, labels)
    if preds.generated is not None:
        generation = generation_scores(preds, uncertain_as)
        if generation is not None:
            metrics["generation"] = generation
    return metrics


def generation_scores(
    preds: SplitPredictions, uncertain_as: Literal["positive", "negative"]
) -> dict[str, Any] | None:
    """Text and clinical-efficacy metrics over the studies that have a reference report; None
    (logged) when none has one, so a model trained with a decoder still evaluates on such data."""
    keep = [i for i, ref in enumerate(preds.references) if tokenize(ref)]
    if not keep:
        log.warning("generation not scored: no study of this split has reference text in its target fields")
        return None
    references = [preds.references[i] for i in keep]
    assert preds.generated is not None  # called for predictions with generated text (score_predictions)
    generated = [preds.generated[i] for i in keep]
    generation = generation_metrics(references, generated)
    efficacy = clinical_efficacy(
        references, generated, default_labeler(), findings=None, uncertain_as=uncertain_as
    )
    generation.update({k: v for k, v in efficacy.items() if k != "per_label"})
    generation["ce_per_label"] = efficacy.get("per_label", {})
    generation["n_without_reference"] = len(preds.references) - len(keep)
    return generation


def write_predictions(preds: SplitPredictions, labels: list[str], path: Path) -> None:
    """One JSON line per study: id, site, true labels, probabilities, boxes, generated and reference text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as fh:
        for i, study in enumerate(preds.studies):
            row: dict[str, Any] = {
                "id": study.id,
                "site": study.site,
                "patient_id": study.patient_id,
                "labels": study.labels,
                "probs": dict(zip(labels, np.round(preds.probs[i], 6).tolist())),
            }
            if preds.boxes is not None:
                row["boxes"] = dict(zip(labels, np.round(preds.boxes[i], 5).tolist()))
            if preds.detections is not None:
                row["detections"] = [
                    {"label": labels[c], "box": np.round(box, 5).tolist(), "score": round(score, 5)}
                    for c, box, score in preds.detections[i]
                ]
            if preds.generated is not None:
                row["generated"] = preds.generated[i]
            row["reference"] = preds.references[i]
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)
