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

**Stacked** pathways (``model.wide.fit: stacked``, built with ``stacked=True``): the linear map
is not learnt by SGD but fitted before training by L-BFGS logistic regression (the baselines'
fit, C chosen on the validation split; :mod:`medmodal.training.wide_stacking`) and then frozen;
the pixel standardisation is the training images' fixed mean and variance. Its logits go through
:class:`StackingWeights` (per-label ``scale * logit + shift``, fitted on out-of-fold logits, also
frozen): only the deep parts train. In training mode the model reads each training study's
*out-of-fold* logit from the batch instead (K-fold cross-fitting, so the deep parts and the
stacking weights learn from what the regression predicts for a study it was not fitted on);
in eval mode, and for any study the batch gives no out-of-fold logit, the pathway computes it.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from medmodal.models.layers import AdaptiveAvgPool2d, SafeBatchNorm1d
from medmodal.models.text_encoders.ngram_bag import HashedNgrams

# Batch keys of the training studies' out-of-fold logits [B, C] (stacked pathways; 0 where the modality is absent).
OUT_OF_FOLD = {"image": "wide_oof_image", "text": "wide_oof_text"}


class StackingWeights(nn.Module):
    """Fitted logits [B, C] -> ``scale * (logits + intercept) + shift`` [B, C].

    ``intercept`` is the fitted regression's; ``scale`` and ``shift`` are the per-label stacking
    weights (1 and 0 until fitted). All three are fitted, frozen buffers: trained by Adam with the
    deep parts, a scale near 0 flips sign within an epoch (each step moves it by about the learning
    rate whatever its gradient), which reverses that label's ranking (measured: demo val AUROC
    0.815 before the first step, 0.744 after one epoch).
    """

    scale: Tensor
    shift: Tensor
    intercept: Tensor

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.register_buffer("intercept", torch.zeros(num_labels))
        self.register_buffer("scale", torch.ones(num_labels))
        self.register_buffer("shift", torch.zeros(num_labels))

    def forward(self, logits: Tensor) -> Tensor:
        """logits [B, C] of the frozen linear map (without intercept) -> [B, C]."""
        return self.scale * (logits + self.intercept) + self.shift

    def stacked(self, fitted: Tensor) -> Tensor:
        """fitted [B, C] logits *with* intercept (e.g. out-of-fold ones) -> [B, C]."""
        return self.scale * fitted + self.shift


class WidePixels(nn.Module):
    """image [B, in_channels, H, W] -> logits [B, num_labels]: pooled pixels, standardised, linear.

    Args:
        num_labels: classes C.
        side: the image is average-pooled to ``side`` x ``side``.
        in_channels: image channels.
        stacked: a fitted, frozen map with stacking weights (module docstring) instead of SGD.
    """

    def __init__(self, num_labels: int, side: int = 32, in_channels: int = 1, stacked: bool = False) -> None:
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
        self.stacking = StackingWeights(num_labels) if stacked else None
        if stacked:
            cast(nn.Linear, self.net[-1]).weight.requires_grad_(False)

    def features(self, image: Tensor) -> Tensor:
        """image [B, in_channels, H, W] -> the pooled pixels [B, in_channels * side * side] (not standardised)."""
        return self.net[1](self.net[0](image))

    def load_fit(self, mean: Tensor, var: Tensor, coef: Tensor, intercept: Tensor) -> None:
        """A stacked pathway's fitted standardisation (mean, var [F]) and regression (coef [C, F], intercept [C])."""
        assert self.stacking is not None, "load_fit needs a stacked pathway"
        norm = cast(SafeBatchNorm1d, self.net[2])
        norm.running_mean.copy_(mean)  # type: ignore[union-attr]  # (buffers of a BatchNorm with stats)
        norm.running_var.copy_(var)  # type: ignore[union-attr]
        cast(nn.Linear, self.net[-1]).weight.data.copy_(coef)
        self.stacking.intercept.copy_(intercept)

    def standardised(self, features: Tensor) -> Tensor:
        """Pooled pixels [B, F] -> standardised by the fitted training mean and variance (stacked pathway)."""
        norm = cast(SafeBatchNorm1d, self.net[2])
        return nn.functional.batch_norm(
            features, norm.running_mean, norm.running_var, training=False, eps=norm.eps
        )

    def forward(self, image: Tensor, out_of_fold: Tensor | None = None) -> Tensor:
        """image [B, in_channels, H, W] (+ optional out-of-fold logits [B, C], read in training mode by a
        stacked pathway) -> [B, num_labels]."""
        if self.stacking is None:
            return self.net(image)
        if self.training and out_of_fold is not None:
            return self.stacking.stacked(out_of_fold)
        return self.stacking(self.net[-1](self.standardised(self.features(image))))


class WideNgrams(HashedNgrams):
    """ids, mask [B, L] -> logits [B, num_labels]: L2-normalised binary bag of uni + hashed bigrams, linear.

    Args:
        vocab_size: tokenizer vocabulary size V.
        num_labels: classes C.
        pad_id: padding id (never counted).
        num_buckets: hash slots of the bigrams (0 = unigrams only).
        stacked: a fitted, frozen map with stacking weights (module docstring) instead of SGD.
    """

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        pad_id: int = 0,
        num_buckets: int = 16384,
        stacked: bool = False,
    ) -> None:
        super().__init__(vocab_size, pad_id, num_buckets)
        self.weights = nn.EmbeddingBag(self.num_ngrams, num_labels, mode="sum")
        nn.init.zeros_(self.weights.weight)
        self.stacking = StackingWeights(num_labels) if stacked else None
        self.idf: Tensor | None
        if stacked:
            self.weights.weight.requires_grad_(False)
            # the training texts' smoothed inverse document frequency of each n-gram (as scikit-learn's
            # TfidfVectorizer), fitted with the regression; 1 until then
            self.register_buffer("idf", torch.ones(self.num_ngrams))
        else:
            self.idf = None

    def features(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids, mask [B, L] -> (n-gram ids [B, N], their weights [B, N]): the sparse L2-normalised binary
        bag: ``1 / sqrt(n)`` at each distinct n-gram of the row (stacked: its idf over the row's L2 norm),
        0 at repeats and padding."""
        mask = mask.bool()
        ids, mask = self.ngrams(ids.masked_fill(~mask, self.pad_id), mask)
        present = distinct(ids, mask)
        if self.idf is None:
            return ids, present / present.sum(dim=1, keepdim=True).clamp_min(1.0).sqrt()
        weighted = present * self.idf[ids]
        return ids, weighted / weighted.square().sum(dim=1, keepdim=True).sqrt().clamp_min(1e-12)

    def load_fit(self, coef: Tensor, intercept: Tensor, idf: Tensor) -> None:
        """A stacked pathway's fitted regression: coef [C, num_ngrams], intercept [C], idf [num_ngrams]."""
        assert self.stacking is not None and self.idf is not None, "load_fit needs a stacked pathway"
        self.weights.weight.data.copy_(coef.T)
        self.stacking.intercept.copy_(intercept)
        self.idf.copy_(idf)

    def forward(self, ids: Tensor, mask: Tensor, out_of_fold: Tensor | None = None) -> Tensor:
        """ids [B, L] long, mask [B, L] bool (+ optional out-of-fold logits [B, C], read in training mode by
        a stacked pathway) -> [B, num_labels] (zeros for a row without words, unless stacked)."""
        if self.stacking is not None and self.training and out_of_fold is not None:
            return self.stacking.stacked(out_of_fold)
        ngram_ids, weights = self.features(ids, mask)
        logits = self.weights(ngram_ids, per_sample_weights=weights.to(self.weights.weight.dtype))
        return logits if self.stacking is None else self.stacking(logits)


def distinct(ids: Tensor, mask: Tensor) -> Tensor:
    """ids, mask [B, N] -> float [B, N]: 1 at the first real occurrence of each id in its row, else 0
    (a binary bag: a repeated n-gram counts once).

    By pairwise comparison ([B, N, N] booleans) rather than a stable sort: the graph exports to ONNX
    (the exporter has no stable Sort), and N is a report's n-grams (twice ``data.max_text_tokens``).
    """
    mask = mask.bool()
    positions = torch.arange(ids.shape[1], device=ids.device)
    earlier = positions[None, :] < positions[:, None]  # [N (i), N (j)]: j before i
    same = (ids[:, :, None] == ids[:, None, :]) & mask[:, None, :]  # [B, i, j]: a real id j equal to i
    repeat = (same & earlier).any(dim=2)
    return (mask & ~repeat).float()
