"""``bilinear``: Low-rank Multimodal Fusion (Liu et al., 2018, arXiv 1806.00064).

Tensor fusion takes the outer product ``[x_i; 1] (x) [x_t; 1]`` (the appended 1 keeps
the unimodal terms alongside the bimodal ones) and maps it linearly to ``out_dim``.
LMF factorises that weight tensor into ``rank`` modality-specific factors, so

    h = sum_r w_r * ([x_i; 1] W_i^(r)) * ([x_t; 1] W_t^(r)) + b

costs O(rank * (D_i + D_t) * out_dim) instead of O(D_i * D_t * out_dim).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.fusion.base import FusionDims, FusionLayer, register_fusion
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


def append_one(x: Tensor) -> Tensor:
    """[B, D] -> [B, D + 1] with a constant 1 appended."""
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=-1)


@register_fusion("bilinear")
class LowRankBilinearFusion(FusionLayer):
    """Low-rank tensor (bilinear) fusion of the modality vectors (``dims.image_dim``, ``dims.text_dim``).

    Args:
        rank: number of factors.
        dropout: on the inputs.
    """

    def __init__(self, dims: FusionDims, out_dim: int, rank: int = 4, dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        self.rank = rank
        self.dropout = nn.Dropout(dropout)
        self.image_factor = nn.Parameter(torch.empty(rank, dims.image_dim + 1, out_dim))
        self.text_factor = nn.Parameter(torch.empty(rank, dims.text_dim + 1, out_dim))
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        for factor in (self.image_factor, self.text_factor):
            for r in range(rank):
                nn.init.xavier_normal_(factor.data[r])
        nn.init.xavier_normal_(self.rank_weights)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim])."""
        image_terms = torch.einsum("bd,rdo->rbo", append_one(self.dropout(image.vector)), self.image_factor)
        text_terms = torch.einsum("bd,rdo->rbo", append_one(self.dropout(text.vector)), self.text_factor)
        vector = torch.einsum("r,rbo->bo", self.rank_weights[0], image_terms * text_terms) + self.bias
        return FusionOutput(vector=vector)
