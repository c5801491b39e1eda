"""Fusion layers, one file each; importing this package registers them.

Contract (``base.py``): built by the registry with ``(image_dim, text_dim, grid_dim, seq_dim, out_dim,
num_labels, **kwargs)``, which :func:`register_fusion` turns into ``cls(FusionDims(...), out_dim, **kwargs)``;
attribute ``out_dim``; ``forward(image: ImageFeatures, text: TextFeatures) -> FusionOutput``.
"""

from medmodal.models.fusion import bilinear, concat, cross_attention, gated, late, stacked  # noqa: F401  (registration)
from medmodal.models.fusion.base import FusionDims, FusionLayer, register_fusion

__all__ = ["FusionDims", "FusionLayer", "register_fusion"]
