"""Fusion layers, one file each; importing this package registers them.

Contract: ``(image_dim, text_dim, grid_dim, seq_dim, out_dim, num_labels, **kwargs)``;
attribute ``out_dim``; ``forward(image: ImageFeatures, text: TextFeatures) -> FusionOutput``.
"""

from medmodal.models.fusion import bilinear, concat, cross_attention, gated, late, stacked  # noqa: F401  (registration)
from medmodal.models.fusion.base import FusionLayer

__all__ = ["FusionLayer"]
