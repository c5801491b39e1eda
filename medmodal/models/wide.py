"""Wide (linear) pathways of a wide & deep classifier (Cheng et al. 2016, "Wide & Deep Learning
for Recommender Systems", arXiv 1606.07792).

Each pathway is a linear model on a fixed, simple representation of one modality whose logits
are *added* to the deep model's classification logits, and it is trained jointly with the deep
parts (with its own learning rate and weight decay, ``model.wide``). It holds what a logistic
regression sees, so the deep parts only have to learn what that misses (on the demo data the
linear baselines beat the deep models: docs/diagnosis.md):

- :class:`WidePixels`: the image average-pooled to ``side`` x ``side``, standardised per pixel
  (BatchNorm without affine parameters), one linear map to the C logits (the pixel logistic
  regression);
- :class:`WideNgrams`: the binary bag of word unigrams and hashed bigrams, L2-normalised
  (each present n-gram weighs ``1 / sqrt(n)``), one embedding row of C logits per n-gram (the
  TF-IDF logistic regression without the idf).

Both start at zero, so a model starts as its deep part alone. A row without the modality gets
zero wide logits.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from medmodal.models.layers import AdaptiveAvgPool2d, SafeBatchNorm1d
from medmodal.models.text_encoders.ngram_bag import HashedNgrams


class WidePixels(nn.Module):
    """image [B, in_channels, H, W] -> logits [B, num_labels]: pooled pixels, standardised, linear.

    Args:
        num_labels: classes C.
        side: the image is average-pooled to ``side`` x ``side``.
        in_channels: image channels.
    """

    def __init__(self, num_labels: int, side: int = 32, in_channels: int = 1) -> None:
        super().__init__()
        if side < 1:
            raise ValueError(f"wide pixel side must be >= 1, got {side}")
        features = in_channels * side * side
        self.net = nn.Sequential(
            AdaptiveAvgPool2d(side),  # exports to ONNX at any image size
            nn.Flatten(1),
            SafeBatchNorm1d(features, affine=False),
            nn.Linear(features, num_labels, bias=False),
        )
        nn.init.zeros_(cast(nn.Linear, self.net[-1]).weight)

    def forward(self, image: Tensor) -> Tensor:
        """image [B, in_channels, H, W] -> [B, num_labels]."""
        return self.net(image)


class WideNgrams(HashedNgrams):
    """ids, mask [B, L] -> logits [B, num_labels]: L2-normalised binary bag of uni + hashed bigrams, linear.

    Args:
        vocab_size: tokenizer vocabulary size V.
        num_labels: classes C.
        pad_id: padding id (never counted).
        num_buckets: hash slots of the bigrams (0 = unigrams only).
    """

    def __init__(self, vocab_size: int, num_labels: int, pad_id: int = 0, num_buckets: int = 16384) -> None:
        super().__init__(vocab_size, pad_id, num_buckets)
        self.weights = nn.EmbeddingBag(self.num_ngrams, num_labels, mode="sum")
        nn.init.zeros_(self.weights.weight)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L] long, mask [B, L] bool -> [B, num_labels] (zeros for a row without words)."""
        mask = mask.bool()
        ids, mask = self.ngrams(ids.masked_fill(~mask, self.pad_id), mask)
        present = distinct(ids, mask)
        weights = present / present.sum(dim=1, keepdim=True).clamp_min(1.0).sqrt()
        return self.weights(ids, per_sample_weights=weights.to(self.weights.weight.dtype))


def distinct(ids: Tensor, mask: Tensor) -> Tensor:
    """ids, mask [B, N] -> float [B, N]: 1 at the first real occurrence of each id in its row, else 0
    (a binary bag: a repeated n-gram counts once)."""
    order = torch.argsort(ids.masked_fill(~mask, -1), dim=1, stable=True)
    sorted_ids = torch.gather(ids.masked_fill(~mask, -1), 1, order)
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    keep_sorted = first & (sorted_ids >= 0)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.float()
