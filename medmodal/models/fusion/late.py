"""``late``: decision-level fusion.

One classifier per modality; the class logits are combined with learned weights,
``logits_c = w_img,c * l_img,c + w_txt,c * l_txt,c`` with ``(w_img,c, w_txt,c)`` a softmax
over the two modalities, per class (initially 1/2 each). The fused ``vector`` for the other
heads (localization, generation) is a projection of the concatenated modality vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from medmodal.models.fusion.base import DecisionFusion, FusionDims, joint_projection, register_fusion
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register_fusion("late")
class LateFusion(DecisionFusion):
    """Decision-level fusion with learned per-class modality weights; ``dropout`` before each
    classifier and the projection.

    ``extras``: ``image_logits`` [B, C], ``text_logits`` [B, C], ``modality_weights`` [2, C]
    (row 0 image, row 1 text).
    """

    def __init__(self, dims: FusionDims, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__(dims, out_dim, dropout)
        self.modality_scores = nn.Parameter(torch.zeros(2, dims.num_labels))
        self.projection = joint_projection(dims, out_dim, dropout)

    def modality_weights(self) -> torch.Tensor:
        """[2, C] softmax over (image, text) of the learned scores, per class."""
        return torch.softmax(self.modality_scores, dim=0)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim], logits [B, C])."""
        image_logits, text_logits = self.unimodal_logits(image, text)
        weights = self.modality_weights()
        logits = weights[0] * image_logits + weights[1] * text_logits
        vector = self.projection(torch.cat([image.vector, text.vector], dim=-1))
        extras = {"image_logits": image_logits, "text_logits": text_logits, "modality_weights": weights}
        return FusionOutput(vector=vector, logits=logits, extras=extras)
