"""``pixel_logreg``: logistic regression on the image downsampled to ``size`` x ``size`` pixels (image only).

The image is decoded and resized as for the deep models (antialiased bilinear, default
32 x 32), flattened, standardised per pixel (scikit-learn ``StandardScaler`` fitted on the
training images) and fed to one logistic regression per label
(:class:`~medmodal.models.baselines.base.OneVsRestLogistic`, C chosen on the validation
split). Studies without a readable image get the training prevalence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from medmodal.models.baselines.base import (
    BaselineData,
    Hide,
    ImageLogisticBaseline,
    ImageSettings,
    State,
    register_baseline,
)


class PixelSettings(ImageSettings):
    size: int = Field(32, ge=4, le=256)


@register_baseline("pixel_logreg")
class PixelLogistic(ImageLogisticBaseline[PixelSettings]):
    """Downsampled pixels + one-vs-rest logistic regression (module docstring)."""

    Settings = PixelSettings

    def inputs(self, data: BaselineData, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        pixels, present = data.images(self.image_size, hide)
        return pixels.reshape(len(data), -1), present

    def state(self) -> State:
        meta, arrays = self.logistic.state()
        return {"logistic": meta, "size": self.image_size}, {**arrays, **self.features.state()}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        n_features = self.image_size * self.image_size
        self.features.load_state(arrays, n_features)
        self.logistic.load_state(arrays, n_labels, n_features)
