"""``mean_box``: the mean training box of each finding, predicted for every study.

Boxes are normalised ``(x0, y0, x1, y1)`` of the stored image (the localization
metric's space); the mean is taken over every training box of the finding. A finding
without training boxes gets the mean of all training boxes, and with no training box
at all, the whole image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medmodal.models.baselines.base import Baseline, BaselineData, Hide, State, check_shape, register_baseline

WHOLE_IMAGE = (0.0, 0.0, 1.0, 1.0)


@register_baseline("mean_box")
class MeanBox(Baseline):  # no settings
    """One box per finding: its training mean (module docstring)."""

    task = "localization"
    modality = "none"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.boxes: np.ndarray | None = None  # [C, 4]

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        per_label: list[list[list[float]]] = [[] for _ in train.labels]
        for study_boxes in train.true_boxes():
            for label, box in study_boxes:
                per_label[label].append(box)
        pooled = [box for boxes in per_label for box in boxes]
        fallback = np.mean(pooled, axis=0) if pooled else np.array(WHOLE_IMAGE)
        self.boxes = np.stack([np.mean(b, axis=0) if b else fallback for b in per_label])
        return {"n_boxes": {name: len(b) for name, b in zip(train.labels, per_label)}}

    def predict(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        """float [N, C, 4]: the same boxes for every study."""
        assert self.boxes is not None  # set by fit / load_state
        return np.broadcast_to(self.boxes, (len(data), *self.boxes.shape)).copy()

    def state(self) -> State:
        assert self.boxes is not None  # state is written after fit
        return {}, {"boxes": self.boxes}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        check_shape("boxes", arrays["boxes"], (n_labels, 4))
        self.boxes = arrays["boxes"]
