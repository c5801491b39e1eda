"""What every image encoder shares: a convolutional body and the two read-outs.

A subclass builds ``self.body`` (``[B, in_channels, H, W] -> [B, C, h, w]``) and calls
:meth:`FeatureMapEncoder.build_readouts` with C. The read-outs turn the body's feature
map into :class:`~medmodal.models.types.ImageFeatures`:

- ``grid``: the feature map itself, or a 1x1-conv projection to ``grid_dim`` channels;
- ``vector``: global average pooling of the feature map, then a linear map to ``out_dim``.
"""

from __future__ import annotations

from torch import Tensor, nn

from medmodal.models.types import ImageFeatures


class FeatureMapEncoder(nn.Module):
    """Base class of the image encoders (see the module docstring).

    Attributes:
        out_dim: width of ``ImageFeatures.vector``.
        grid_dim: channels of ``ImageFeatures.grid``.
        body: the convolutional trunk, set by the subclass.
    """

    body: nn.Module

    def build_readouts(self, body_channels: int, out_dim: int, grid_dim: int | None, dropout: float) -> None:
        """Create the grid projection (identity when ``grid_dim`` is None) and the vector head."""
        self.out_dim = out_dim
        self.grid_dim = grid_dim or body_channels
        self.grid_proj = (
            nn.Identity() if self.grid_dim == body_channels else nn.Conv2d(body_channels, self.grid_dim, 1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.vector_proj = nn.Sequential(
            nn.Flatten(1), nn.Dropout(dropout), nn.Linear(body_channels, out_dim)
        )

    def forward(self, image: Tensor) -> ImageFeatures:
        """image [B, in_channels, H, W] -> ImageFeatures(vector [B, out_dim], grid [B, grid_dim, h, w])."""
        feature_map = self.body(image)
        return ImageFeatures(
            vector=self.vector_proj(self.pool(feature_map)), grid=self.grid_proj(feature_map)
        )
