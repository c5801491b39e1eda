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
    DEFAULT_C_GRID,
    BaselineData,
    BaselineSettings,
    ClassifierBaseline,
    Hide,
    OneVsRestLogistic,
    State,
    check_shape,
    prevalence_fill,
)
from medmodal.models.registry import register


class PixelSettings(BaselineSettings):
    size: int = Field(32, ge=4, le=256)
    c_grid: list[float] = Field(list(DEFAULT_C_GRID), min_length=1)
    class_weight: str | None = "balanced"


class Standardizer:
    """scikit-learn ``StandardScaler`` whose fitted mean / scale store as two arrays."""

    def __init__(self) -> None:
        from sklearn.preprocessing import StandardScaler

        self.scaler = StandardScaler()

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        return self.scaler.fit_transform(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.scaler.transform(x)

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.scaler.mean_, "scale": self.scaler.scale_}

    def load_state(self, arrays: dict[str, np.ndarray], n_features: int) -> None:
        check_shape("mean", arrays["mean"], (n_features,))
        check_shape("scale", arrays["scale"], (n_features,))
        self.scaler.mean_, self.scaler.scale_ = arrays["mean"], arrays["scale"]
        self.scaler.var_ = arrays["scale"] ** 2
        self.scaler.n_features_in_ = n_features


@register("baseline", "pixel_logreg")
class PixelLogistic(ClassifierBaseline):
    """Downsampled pixels + one-vs-rest logistic regression (module docstring)."""

    name = "pixel_logreg"
    modality = "image"
    Settings = PixelSettings
    settings: PixelSettings

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.image_size = self.settings.size
        self.scaler = Standardizer()
        self.logistic = OneVsRestLogistic(self.settings.c_grid, self.settings.class_weight)

    def _pixels(self, data: BaselineData, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        pixels, present = data.images(self.image_size, hide)
        return pixels.reshape(len(data), -1), present

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        x_train, keep_train = self._pixels(train)
        x_val, keep_val = self._pixels(val)
        x_train = self.scaler.fit_transform(x_train[keep_train])
        return self.logistic.fit(
            x_train,
            train.targets()[keep_train],
            self.scaler.transform(x_val[keep_val]),
            val.targets()[keep_val],
        )

    def predict(self, data: BaselineData, hide: Hide | None = None) -> np.ndarray:
        x, present = self._pixels(data, hide)
        probs = self.logistic.predict_proba(self.scaler.transform(x))
        assert self.logistic.prior is not None  # predict_proba raised if unfitted; fit / load_state set it
        return prevalence_fill(probs, present, self.logistic.prior)

    def state(self) -> State:
        meta, arrays = self.logistic.state()
        return {"logistic": meta, "size": self.image_size}, {**arrays, **self.scaler.state()}

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        n_features = self.image_size * self.image_size
        self.scaler.load_state(arrays, n_features)
        self.logistic.load_state(arrays, n_labels, n_features)
