"""The visual question answering network: image + question -> logits over the answer vocabulary.

Built from registry parts (:func:`~medmodal.models.multimodal.build_part`): an image encoder
(``small_cnn``, MONAI backbones), a question encoder (any text encoder, e.g. ``bilstm_attention``),
a fusion layer (``concat``, ``gated``, ``bilinear``, ``cross_attention``; the question plays the
text's role) and an MLP classifier over the A answers. Trained by
:class:`medmodal.tasks.vqa.VQAModule`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from medmodal.config import PartConfig
from medmodal.models.layers import mlp
from medmodal.models.multimodal import build_part
from medmodal.models.types import ImageFeatures


class VQAModel(nn.Module):
    """image [B,1,H,W] + question ids [N,L] -> answer logits [N, A].

    Args:
        image_encoder, question_encoder, fusion: the parts by registry name (``pretrained_path`` loaded).
        vocab_size, pad_id: of the question tokenizer.
        num_answers: A, the size of the answer vocabulary.
        embed_dim: width of the encoders' vectors and the fused vector.
        use_image: False feeds a blank image (the question-only baseline with the same network).
    """

    def __init__(
        self,
        image_encoder: PartConfig,
        question_encoder: PartConfig,
        fusion: PartConfig,
        *,
        vocab_size: int,
        pad_id: int,
        num_answers: int,
        embed_dim: int = 64,
        dropout: float = 0.1,
        use_image: bool = True,
    ) -> None:
        super().__init__()
        if num_answers < 1:
            raise ValueError("the answer vocabulary is empty")
        self.use_image = use_image
        self.image_encoder = build_part(
            "image_encoder", image_encoder, {"in_channels": 1, "out_dim": embed_dim}, {}
        )
        self.question_encoder = build_part(
            "text_encoder",
            question_encoder,
            {"vocab_size": vocab_size, "out_dim": embed_dim, "pad_id": pad_id},
            {},
        )
        self.fusion = build_part("fusion", fusion, {
            "image_dim": self.image_encoder.out_dim, "text_dim": self.question_encoder.out_dim,
            "grid_dim": self.image_encoder.grid_dim, "seq_dim": self.question_encoder.seq_dim,
            "out_dim": embed_dim, "num_labels": num_answers,
        }, {})  # fmt: skip
        self.classifier = mlp(cast(int, self.fusion.out_dim), embed_dim, num_answers, dropout)

    def forward(
        self, image: Tensor, question_ids: Tensor, question_mask: Tensor, image_index: Tensor | None = None
    ) -> Tensor:
        """Answer logits [N, A].

        Args:
            image: [B,1,H,W].
            question_ids, question_mask: [N,L] long / bool.
            image_index: [N] long, the image each question is about; None = question i is
                about image i (N = B).
        """
        if not self.use_image:  # question-only baseline: the same network sees a blank image
            image = torch.zeros_like(image)
        features = self.image_encoder(image)
        if image_index is not None:
            features = ImageFeatures(features.vector[image_index], features.grid[image_index])
        fused = self.fusion(features, self.question_encoder(question_ids, question_mask))
        return self.classifier(fused.vector)
