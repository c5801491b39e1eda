"""``linear_probe``: logistic regression on frozen features of one of our image encoders (image only).

The encoder (any registered ``image_encoder``: ``small_cnn``, ``resnet18`` ... from MONAI)
is built with the run's seed and, with ``pretrained_path``, loaded from a LOCAL weights
file (e.g. ``medmodal pretrain``'s image encoder); it is never trained here. Its feature
map (the encoder's ``body``) is pooled (``avgmax``: global average and max pooling
concatenated; or ``avg`` / ``max``), standardised, and fed to one logistic regression per
label (:class:`~medmodal.models.baselines.base.OneVsRestLogistic`, C chosen on the
validation split). Input: the image at ``data.image_size`` (or ``size``), normalised as for
the deep models. The encoder's weights are stored with the run as plain arrays.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from medmodal.data.dataset import normalize_image
from medmodal.models.baselines.base import (
    BaselineData,
    Hide,
    ImageLogisticBaseline,
    ImageSettings,
    State,
    check_shape,
    register_baseline,
)
from medmodal.models.pretrained import load_pretrained
from medmodal.models.registry import create

ENCODER_PREFIX = "encoder."


class ProbeSettings(ImageSettings):
    encoder: str = "small_cnn"
    encoder_kwargs: dict[str, Any] = Field(default_factory=dict)
    pretrained_path: str | None = None  # local weights file; None: random initialisation (seeded)
    size: int | None = Field(None, ge=16, le=1024)  # None: data.image_size
    pooling: Literal["avg", "max", "avgmax"] = "avgmax"
    batch_size: int = Field(64, ge=1)


@register_baseline("linear_probe")
class LinearProbe(ImageLogisticBaseline[ProbeSettings]):
    """Frozen image-encoder features + one-vs-rest logistic regression (module docstring)."""

    Settings = ProbeSettings
    default_size = 128  # data.image_size replaces it at fit time unless ``size`` is set

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.encoder = self._build_encoder()

    def _build_encoder(self) -> torch.nn.Module:
        s = self.settings
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            encoder = create("image_encoder", s.encoder, in_channels=1, out_dim=64, **s.encoder_kwargs)
        return encoder.eval()

    @torch.no_grad()
    def inputs(self, data: BaselineData, hide: Hide | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(float [N, F] pooled feature maps, zeros where the image is missing; bool [N] present)."""
        pixels, present = data.images(self.image_size, hide)
        chunks = []
        for start in range(0, len(data), self.settings.batch_size):
            batch = normalize_image(torch.from_numpy(pixels[start : start + self.settings.batch_size]))[
                :, None
            ]
            body = getattr(self.encoder, "body", None)
            fmap = body(batch) if body is not None else self.encoder(batch).grid
            pooled = []
            if self.settings.pooling in ("avg", "avgmax"):
                pooled.append(fmap.mean(dim=(2, 3)))
            if self.settings.pooling in ("max", "avgmax"):
                pooled.append(fmap.amax(dim=(2, 3)))
            chunks.append(torch.cat(pooled, dim=1).double().numpy())
        feats = np.concatenate(chunks) if chunks else np.zeros((0, 0))
        return np.where(present[:, None], feats, 0.0), present

    def fit(self, train: BaselineData, val: BaselineData, **context: Any) -> dict[str, Any]:
        if self.settings.pretrained_path:  # read at fit time only: the run stores the weights it used
            load_pretrained(self.encoder, self.settings.pretrained_path)
            self.encoder.eval()
        if self.settings.size is None:
            self.image_size = train.image_size
        info = super().fit(train, val)
        return {**info, "n_features": self.features.size, "image_size": self.image_size}

    def state(self) -> State:
        meta, arrays = self.logistic.state()
        weights = {ENCODER_PREFIX + k: v.detach().cpu().numpy() for k, v in self.encoder.state_dict().items()}
        return (
            {"logistic": meta, "image_size": self.image_size, "n_features": self.features.size},
            {**arrays, **self.features.state(), **weights},
        )

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], n_labels: int) -> None:
        self.image_size = int(meta["image_size"])
        expected = self.encoder.state_dict()
        weights = {k[len(ENCODER_PREFIX) :]: v for k, v in arrays.items() if k.startswith(ENCODER_PREFIX)}
        if set(weights) != set(expected):
            raise ValueError(
                "baseline state: the stored encoder weights do not match the encoder "
                f"'{self.settings.encoder}' ({len(weights)} stored, {len(expected)} expected)"
            )
        for key, value in expected.items():
            check_shape(ENCODER_PREFIX + key, weights[key], tuple(value.shape))
        self.encoder.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
        n_features = int(meta["n_features"])
        self.features.load_state(arrays, n_features)
        self.logistic.load_state(arrays, n_labels, n_features)
