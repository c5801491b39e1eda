"""``concat``: early (joint) fusion, an MLP over the concatenated modality vectors."""

from __future__ import annotations

import torch
from torch import nn

from medmodal.models.fusion.base import FusionLayer
from medmodal.models.layers import mlp
from medmodal.models.registry import register
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register("fusion", "concat")
class ConcatFusion(FusionLayer):
    """``vector = LayerNorm(MLP([x_image; x_text]))``.

    Args:
        image_dim, text_dim: widths of the modality vectors.
        grid_dim, seq_dim, num_labels: unused (part of the fusion contract).
        out_dim: width of the fused vector.
        hidden_dim: MLP hidden width; None = ``out_dim``.
        num_layers: Linear layers in the MLP.
        dropout: between MLP layers.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        grid_dim: int,
        seq_dim: int,
        out_dim: int,
        num_labels: int,
        hidden_dim: int | None = None,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.mlp = mlp(image_dim + text_dim, hidden_dim or out_dim, out_dim, dropout, layers=num_layers)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim])."""
        return FusionOutput(vector=self.norm(self.mlp(torch.cat([image.vector, text.vector], dim=-1))))
