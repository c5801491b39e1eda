"""Missing modalities: learned placeholders and modality dropout.

A study without an image (or whose image is hidden by modality dropout) gets the learned
:class:`ImagePlaceholder` features instead of encoder features; a study without text gets
the :class:`TextPlaceholder`. The rest of the model never sees a gap, so every study gets
a finite prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.types import ImageFeatures, TextFeatures


def _learned(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))


class ImagePlaceholder(nn.Module):
    """Learned stand-in for a missing image: a vector [out_dim] and a per-channel grid value [grid_dim]."""

    def __init__(self, out_dim: int, grid_dim: int) -> None:
        super().__init__()
        self.vector = _learned(out_dim)
        self.grid = _learned(grid_dim)

    def fill(self, features: ImageFeatures, present: Tensor) -> ImageFeatures:
        """Rows of ``features`` where ``present`` [B] is False replaced by the placeholder."""
        vector = torch.where(present[:, None], features.vector, self.vector.to(features.vector.dtype))
        grid_value = self.grid.to(features.grid.dtype)[None, :, None, None].expand_as(features.grid)
        grid = torch.where(present[:, None, None, None], features.grid, grid_value)
        return ImageFeatures(vector=vector, grid=grid)


class TextPlaceholder(nn.Module):
    """Learned text features for missing text: a vector [out_dim] and one token [seq_dim].

    A placeholder row's sequence is that token at position 0 (mask True there only), so
    parts that attend over tokens always have one; its word attention is zero (no words).
    """

    def __init__(self, out_dim: int, seq_dim: int) -> None:
        super().__init__()
        self.vector = _learned(out_dim)
        self.token = _learned(seq_dim)

    def fill(self, features: TextFeatures, present: Tensor) -> TextFeatures:
        """Rows of ``features`` where ``present`` [B] is False replaced by the placeholder."""
        sequence, mask = features.sequence, features.mask
        first = torch.zeros(mask.shape[1], dtype=torch.bool, device=mask.device)
        first[0] = True
        placeholder_sequence = first[None, :, None].to(sequence.dtype) * self.token.to(sequence.dtype)
        attention = features.attention
        if attention is not None:
            attention = attention * present[:, None].to(attention.dtype)
        return TextFeatures(
            vector=torch.where(present[:, None], features.vector, self.vector.to(features.vector.dtype)),
            sequence=torch.where(present[:, None, None], sequence, placeholder_sequence),
            mask=torch.where(present[:, None], mask, first[None, :]),
            attention=attention,
        )


def hide_one_modality(has_image: Tensor, has_text: Tensor, probability: float) -> tuple[Tensor, Tensor]:
    """Modality dropout: per sample having both, with ``probability`` hide one, image or text at random.

    Never hides both, and never hides the only modality a sample has.
    Returns the updated (has_image [B], has_text [B]).
    """
    both = has_image & has_text
    drop = (torch.rand(both.shape, device=both.device) < probability) & both
    hide_image = drop & (torch.rand(both.shape, device=both.device) < 0.5)
    hide_text = drop & ~hide_image
    return has_image & ~hide_image, has_text & ~hide_text
