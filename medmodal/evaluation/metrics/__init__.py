"""Evaluation metrics: classification, localization, report generation, clinical efficacy, calibration.

Inputs are numpy arrays or lists (torch tensors accepted); outputs are plain
JSON-serialisable dicts with flat keys (``None`` where a value is undefined,
never NaN), which the evaluation runner nests under ``classification.``,
``localization.``, ``generation.``.

Established implementations do the computing: scikit-learn (classification, CE),
MONAI (box IoU), pycocoevalcap (BLEU, METEOR, ROUGE-L, CIDEr-D); see each module.
"""

from medmodal.evaluation.metrics.calibration import expected_calibration_error, reliability_curve
from medmodal.evaluation.metrics.classification import (
    NEVER_THRESHOLD,
    best_f1_thresholds,
    best_micro_f1_thresholds,
    classification_metrics,
)
from medmodal.evaluation.metrics.clinical_efficacy import clinical_efficacy
from medmodal.evaluation.metrics.generation import generation_metrics, tokenize
from medmodal.evaluation.metrics.localization import localization_metrics

__all__ = [
    "NEVER_THRESHOLD",
    "best_f1_thresholds",
    "best_micro_f1_thresholds",
    "classification_metrics",
    "clinical_efficacy",
    "expected_calibration_error",
    "generation_metrics",
    "localization_metrics",
    "reliability_curve",
    "tokenize",
]
