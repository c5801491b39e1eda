"""``late_fusion``: the plain mean of a text baseline's and an image baseline's probabilities.

Both parts (default ``tfidf_logreg`` and ``pixel_logreg``, each with its own settings from
``baseline.kwargs``) are fitted independently; a study's probability is the mean over the
modalities it has (one modality missing: that of the other; none: the training prevalence).
No weights are learnt, so nothing is tuned beyond each part's own C.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medmodal.models.baselines.base import (
    BaselineData,
    BaselineSettings,
    ClassifierBaseline,
    Hide,
    State,
    check_shape,
    prevalence_fill,
    register_baseline,
)
from medmodal.models.registry import create


class LateFusionSettings(BaselineSettings):
    text: str = "tfidf_logreg"
    image: str = "pixel_logreg"


@register_baseline("late_fusion")
class LateFusion(ClassifierBaseline[LateFusionSettings]):
    """Mean of the available modalities' probabilities (module docstring)."""

    modality = "both"
    Settings = LateFusionSettings

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.parts: dict[str, ClassifierBaseline] = {}
        for modality in ("text", "image"):
            name = getattr(self.settings, modality)
            part = create("baseline", name, seed=self.seed, table=self.table, **self.table.get(name, {}))
            if not isinstance(part, ClassifierBaseline) or part.modality != modality:
                raise ValueError(
                    f"baseline.kwargs.late_fusion.{modality}: '{name}' is not a {modality} classifier baseline"
                )
            self.parts[modality] = part
        self.prior: np.ndarray | None = None

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        info = {modality: part.fit(train, val) for modality, part in self.parts.items()}
        n = len(train)
        self.prior = (train.targets().sum(axis=0) + 0.5) / (n + 1.0)
        return info

    def components(self, data: BaselineData, hide: Hide | None = None) -> dict[str, np.ndarray]:
        return {modality: part.predict(data, hide) for modality, part in self.parts.items()}

    def predict(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        total = np.zeros((len(data), len(data.labels)))
        count = np.zeros(len(data))
        for modality, probs in self.components(data, hide).items():
            present = self.parts[modality].available(data, hide)
            total[present] += probs[present]
            count += present
        mean = total / np.maximum(count, 1)[:, None]
        assert self.prior is not None  # set by fit / load_state
        return prevalence_fill(mean, count > 0, self.prior)

    def available(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        return self.parts["text"].available(data, hide) | self.parts["image"].available(data, hide)

    def state(self) -> State:
        assert self.prior is not None  # state is written after fit
        meta: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {"prior": self.prior}
        for modality, part in self.parts.items():
            part_meta, part_arrays = part.state()
            meta[modality] = part_meta
            arrays.update({f"{modality}/{k}": v for k, v in part_arrays.items()})
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        check_shape("prior", arrays["prior"], (n_labels,))
        self.prior = arrays["prior"]
        for modality, part in self.parts.items():
            prefix = f"{modality}/"
            part.load_state(
                meta[modality],
                {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
                n_labels,
            )
