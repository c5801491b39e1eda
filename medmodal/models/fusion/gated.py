"""``gated``: the Gated Multimodal Unit (Arevalo et al., 2017, arXiv 1702.01992).

``h_i = tanh(W_i x_i)``, ``h_t = tanh(W_t x_t)``, ``z = sigmoid(W_z [x_i; x_t])`` and
``h = z * h_i + (1 - z) * h_t``: a learned, per-sample and per-feature choice between the
image and the text evidence. The gate is returned in ``extras`` for inspection.
"""

from __future__ import annotations

import torch
from torch import nn

from medmodal.models.fusion.base import FusionDims, FusionLayer, register_fusion
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register_fusion("gated")
class GatedFusion(FusionLayer):
    """Gated Multimodal Unit; ``dropout`` on the inputs.

    ``extras``: ``gate`` [B, out_dim] (z, 1 = image), ``image_share`` [B] (mean of z).
    """

    def __init__(self, dims: FusionDims, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__(out_dim)
        self.dropout = nn.Dropout(dropout)
        self.image_proj = nn.Linear(dims.image_dim, out_dim, bias=False)
        self.text_proj = nn.Linear(dims.text_dim, out_dim, bias=False)
        self.gate = nn.Linear(dims.joint_dim, out_dim)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim], extras gate)."""
        x_image, x_text = self.dropout(image.vector), self.dropout(text.vector)
        h_image = torch.tanh(self.image_proj(x_image))
        h_text = torch.tanh(self.text_proj(x_text))
        z = torch.sigmoid(self.gate(torch.cat([x_image, x_text], dim=-1)))
        vector = z * h_image + (1 - z) * h_text
        return FusionOutput(vector=vector, extras={"gate": z, "image_share": z.mean(dim=-1)})
