"""Image encoders, one file per family; importing this package registers them.

Contract: ``(in_channels=1, out_dim=256, **kwargs)``; attributes ``out_dim``, ``grid_dim``;
``forward(image [B, 1, H, W]) -> ImageFeatures(vector [B, out_dim], grid [B, grid_dim, h, w])``.
"""

from medmodal.models.image_encoders import monai_backbones, small_cnn  # noqa: F401  (registration)
from medmodal.models.image_encoders.base import FeatureMapEncoder
from medmodal.models.pretrained import load_pretrained

__all__ = ["FeatureMapEncoder", "load_pretrained"]
