"""``concat``: early (joint) fusion, an MLP over the concatenated modality vectors."""

from __future__ import annotations

import torch
from torch import nn

from medmodal.models.fusion.base import FusionDims, FusionLayer, register_fusion
from medmodal.models.layers import mlp
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register_fusion("concat")
class ConcatFusion(FusionLayer):
    """``vector = LayerNorm(MLP([x_image; x_text]))``.

    Args:
        hidden_dim: MLP hidden width; None = ``out_dim``.
        num_layers: Linear layers in the MLP.
        dropout: between MLP layers.
    """

    def __init__(
        self,
        dims: FusionDims,
        out_dim: int,
        hidden_dim: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(out_dim)
        self.mlp = mlp(dims.joint_dim, hidden_dim or out_dim, out_dim, dropout, layers=num_layers)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim])."""
        return FusionOutput(vector=self.norm(self.mlp(torch.cat([image.vector, text.vector], dim=-1))))
