"""``late``: decision-level fusion.

One classifier per modality; the class logits are combined with learned weights,
``logits_c = w_img,c * l_img,c + w_txt,c * l_txt,c`` with ``(w_img,c, w_txt,c)`` a softmax
over the two modalities, per class (initially 1/2 each). The fused ``vector`` for the other
heads (localization, generation) is a projection of the concatenated modality vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from medmodal.models.fusion.base import FusionLayer
from medmodal.models.registry import register
from medmodal.models.types import FusionOutput, ImageFeatures, TextFeatures


@register("fusion", "late")
class LateFusion(FusionLayer):
    """Decision-level fusion; ``FusionOutput.logits`` are the model's logits.

    Args:
        image_dim, text_dim: widths of the modality vectors.
        grid_dim, seq_dim: unused (part of the fusion contract).
        out_dim: width of the projected ``vector``.
        num_labels: classes C.
        dropout: before each classifier and the projection.

    ``extras``: ``image_logits`` [B, C], ``text_logits`` [B, C], ``modality_weights`` [2, C]
    (row 0 image, row 1 text).
    """

    produces_logits = True

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        grid_dim: int,
        seq_dim: int,
        out_dim: int,
        num_labels: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.image_classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(image_dim, num_labels))
        self.text_classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(text_dim, num_labels))
        self.modality_scores = nn.Parameter(torch.zeros(2, num_labels))
        self.projection = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(image_dim + text_dim, out_dim), nn.GELU()
        )

    def modality_weights(self) -> torch.Tensor:
        """[2, C] softmax over (image, text) of the learned scores, per class."""
        return torch.softmax(self.modality_scores, dim=0)

    def forward(self, image: ImageFeatures, text: TextFeatures) -> FusionOutput:
        """image.vector [B, Di], text.vector [B, Dt] -> FusionOutput(vector [B, out_dim], logits [B, C])."""
        image_logits = self.image_classifier(image.vector)
        text_logits = self.text_classifier(text.vector)
        weights = self.modality_weights()
        logits = weights[0] * image_logits + weights[1] * text_logits
        vector = self.projection(torch.cat([image.vector, text.vector], dim=-1))
        extras = {"image_logits": image_logits, "text_logits": text_logits, "modality_weights": weights}
        return FusionOutput(vector=vector, logits=logits, extras=extras)
