"""What every image encoder shares: a convolutional body and the two read-outs.

A subclass builds ``self.body`` (``[B, in_channels, H, W] -> [B, C, h, w]``) and calls
:meth:`FeatureMapEncoder.build_readouts` with C. The read-outs turn the body's feature
map into :class:`~medmodal.models.types.ImageFeatures`:

- ``grid``: the feature map itself, or a 1x1-conv projection to ``grid_dim`` channels;
- ``vector``: a pooling of the feature map, then a linear map to ``out_dim``. ``readout``
  chooses the pooling: ``"mean"`` (global average: translation-invariant, forgets *where*
  a finding is) or ``"flatten"`` (average-pool to a ``readout_grid`` x ``readout_grid`` grid
  and flatten it, so the vector keeps the coarse position of each feature, as a linear
  model on downsampled pixels does; see docs/diagnosis.md).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from medmodal.models.layers import AdaptiveAvgPool2d
from medmodal.models.types import ImageFeatures


class FeatureMapEncoder(nn.Module):
    """Base class of the image encoders (see the module docstring).

    Attributes:
        out_dim: width of ``ImageFeatures.vector``.
        grid_dim: channels of ``ImageFeatures.grid``.
        body: the convolutional trunk, set by the subclass.
    """

    body: nn.Module

    def build_readouts(
        self,
        body_channels: int,
        out_dim: int,
        grid_dim: int | None,
        dropout: float,
        readout: Literal["mean", "flatten"] = "mean",
        readout_grid: int = 4,
    ) -> None:
        """Create the grid projection (identity when ``grid_dim`` is None) and the vector head
        (``readout``: global mean, or the flattened ``readout_grid`` x ``readout_grid`` pooled map)."""
        if readout not in ("mean", "flatten"):
            raise ValueError(f"readout must be 'mean' or 'flatten', got {readout!r}")
        if readout_grid < 1:
            raise ValueError(f"readout_grid must be >= 1, got {readout_grid}")
        self.out_dim = out_dim
        self.grid_dim = grid_dim or body_channels
        self.grid_proj = (
            nn.Identity() if self.grid_dim == body_channels else nn.Conv2d(body_channels, self.grid_dim, 1)
        )
        side = 1 if readout == "mean" else readout_grid
        self.pool = AdaptiveAvgPool2d(side)  # also exports to ONNX at any image size
        self.vector_proj = nn.Sequential(
            nn.Flatten(1), nn.Dropout(dropout), nn.Linear(body_channels * side * side, out_dim)
        )

    def forward(self, image: Tensor) -> ImageFeatures:
        """image [B, in_channels, H, W] -> ImageFeatures(vector [B, out_dim], grid [B, grid_dim, h, w])."""
        feature_map = self.body(image)
        return ImageFeatures(
            vector=self.vector_proj(self.pool(feature_map)), grid=self.grid_proj(feature_map)
        )
