"""``stacked``: per-modality logits added, plus a learned joint correction.

``logits = l_img + l_txt + g(x_img, x_txt)`` with ``l_img = W_img x_img``,
``l_txt = W_txt x_txt`` (one linear classifier per modality) and ``g`` a small MLP on the
concatenated vectors whose last layer starts at zero. Adding log-odds is how independent
evidence combines (a product of experts: each modality's classifier is trained
end-to-end inside the sum, so its logit is the evidence the other lacks); ``g`` then learns
only the interactions. This is the stacked form of the late fusion that beats the gated
unit on the demo data (docs/diagnosis.md). The fused ``vector`` for the other heads is a
projection of the concatenated modality vectors.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from medmodal.models.fusion.base import DecisionFusion, FusionDims, joint_projection, register_fusion
from medmodal.models.layers import mlp
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register_fusion("stacked")
class StackedFusion(DecisionFusion):
    """Sum of unimodal logits + joint term.

    Args:
        hidden_dim: width of the joint MLP (0 = no joint term: pure sum of unimodal logits).
        dropout: before each classifier, in the joint MLP and before the projection.

    ``extras``: ``image_logits``, ``text_logits``, ``joint_logits`` [B, C].
    """

    def __init__(self, dims: FusionDims, out_dim: int, hidden_dim: int = 64, dropout: float = 0.1) -> None:
        if hidden_dim < 0:
            raise ValueError(f"hidden_dim must be >= 0, got {hidden_dim}")
        super().__init__(dims, out_dim, dropout)
        self.joint = None
        if hidden_dim:
            self.joint = nn.Sequential(
                nn.Dropout(dropout), mlp(dims.joint_dim, hidden_dim, dims.num_labels, dropout)
            )
            last = cast(nn.Linear, cast(nn.Sequential, self.joint[-1])[-1])  # the mlp's last Linear
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.projection = joint_projection(dims, out_dim, dropout)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim], logits [B, C])."""
        both = torch.cat([image.vector, text.vector], dim=-1)
        image_logits, text_logits = self.unimodal_logits(image, text)
        logits = image_logits + text_logits
        extras = {"image_logits": image_logits, "text_logits": text_logits}
        if self.joint is not None:
            extras["joint_logits"] = self.joint(both)
            logits = logits + extras["joint_logits"]
        return FusionOutput(vector=self.projection(both), logits=logits, extras=extras)
