"""``template_report``: one fixed sentence per finding the run's classifier predicts.

The findings are those whose probability (from the run's classifier baseline, e.g.
``late_fusion``) reaches a per-label threshold chosen on the validation split: by default
(``threshold: val_micro_f1``) the thresholds with the best F1 pooled over all labels
(:func:`~medmodal.evaluation.metrics.best_micro_f1_thresholds`, the micro averaging of the CE F1
and the rule of the deep models' retrieved reports); with ``val_f1`` each label's best-F1
threshold (:func:`~medmodal.evaluation.metrics.best_f1_thresholds`); else a fixed number. The report
is the sentences of those findings in label order (:data:`SENTENCES`, a plain
``"There is <finding>."`` for a label not in the table; ``sentences`` overrides), or
:data:`NORMAL_REPORT` when none is predicted. Every sentence of the table is read as a
positive mention by the report labeler that scores clinical efficacy (tested), so CE F1
measures the classifier's findings, not the wording.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from medmodal.config import ConfigError
from medmodal.evaluation.metrics import best_f1_thresholds, best_micro_f1_thresholds
from medmodal.models.baselines.base import (
    Baseline,
    BaselineData,
    BaselineSettings,
    Hide,
    State,
    check_shape,
    register_baseline,
)

SENTENCES: dict[str, str] = {
    "cardiomegaly": "The heart is enlarged.",
    "effusion": "There is a pleural effusion.",
    "pericardial_effusion": "There is a pericardial effusion.",
    "pneumothorax": "There is a pneumothorax.",
    "consolidation": "There is airspace consolidation.",
    "edema": "There is pulmonary edema.",
    "congestion": "There is pulmonary vascular congestion.",
    "atelectasis": "There is atelectasis.",
    "opacity": "There is an opacity.",
    "pneumonia": "Findings are consistent with pneumonia.",
    "nodule": "There is a pulmonary nodule.",
    "mass": "There is a mass.",
    "emphysema": "There is emphysema.",
    "granuloma": "There is a calcified granuloma.",
    "fracture": "There is a rib fracture.",
    "hernia": "There is a hiatal hernia.",
    "scoliosis": "There is scoliosis.",
    "fibrosis": "There is pulmonary fibrosis.",
    "pleural_thickening": "There is pleural thickening.",
}
NORMAL_REPORT = "The heart size is normal. The lungs are clear. No acute cardiopulmonary abnormality."


def sentence_for(label: str, table: dict[str, str] | None = None) -> str:
    """The sentence stating ``label`` (``table`` first, then :data:`SENTENCES`, then a generic one)."""
    for source in (table or {}, SENTENCES):
        if label in source:
            return source[label]
    return f"There is {label.replace('_', ' ')}."


class TemplateSettings(BaselineSettings):
    threshold: Literal["val_f1", "val_micro_f1"] | float = "val_micro_f1"
    sentences: dict[str, str] = Field(default_factory=dict)
    normal: str = Field(NORMAL_REPORT, min_length=1)


@register_baseline("template_report")
class TemplateReport(Baseline[TemplateSettings]):
    """Sentences of the predicted findings (module docstring); needs the run's classifier."""

    task = "generation"
    modality = "none"
    Settings = TemplateSettings

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(self.settings.threshold, float) and not 0 < self.settings.threshold < 1:
            raise ConfigError(
                "baseline.kwargs.template_report.threshold: a number in (0, 1), 'val_f1' or 'val_micro_f1'"
            )
        self.labels: list[str] = []
        self.thresholds: np.ndarray | None = None

    def fit(
        self, train: BaselineData, val: BaselineData, *, val_probs: np.ndarray | None = None, **context: Any
    ) -> dict[str, Any]:
        """``val_probs`` [N_val, C]: the classifier's validation probabilities (for ``threshold: val_f1`` / ``val_micro_f1``)."""
        self.labels = list(train.labels)
        if isinstance(self.settings.threshold, float):
            self.thresholds = np.full(len(self.labels), float(self.settings.threshold))
        elif val_probs is None or len(val) == 0:
            raise ValueError(
                f"template_report with threshold {self.settings.threshold!r} needs a classifier and validation studies"
            )
        else:
            choose = (
                best_micro_f1_thresholds if self.settings.threshold == "val_micro_f1" else best_f1_thresholds
            )
            self.thresholds = np.asarray(choose(val_probs, val.targets()), dtype=np.float64)
        return {"thresholds": dict(zip(self.labels, self.thresholds.round(4).tolist()))}

    def predict(
        self, data: BaselineData, probs: np.ndarray | None = None, hide: Hide | None = None
    ) -> list[str]:
        """N reports from the classifier's probabilities ``probs`` [N, C]."""
        if probs is None:
            raise ValueError(
                "template_report needs the probabilities of a classifier baseline (baseline.classifier)"
            )
        reports = []
        for row in np.asarray(probs) >= self.thresholds:
            found = [sentence_for(name, self.settings.sentences) for name, on in zip(data.labels, row) if on]
            reports.append(" ".join(found) if found else self.settings.normal)
        return reports

    def state(self) -> State:
        assert self.thresholds is not None  # state is written after fit
        return {}, {"thresholds": self.thresholds}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        check_shape("thresholds", arrays["thresholds"], (n_labels,))
        self.thresholds = arrays["thresholds"]
