"""What the text encoders share: the constructor contract, word-level attention pooling and the
output projection.

The registry builds a text encoder with the keywords ``(vocab_size, out_dim, pad_id, **kwargs)``:
the model factory wires ``vocab_size`` and ``pad_id``, ``out_dim`` defaults to the model width and
``kwargs`` come from the config. The classes of this package take the vocabulary and the widths
(``embed_dim`` included) as one :class:`TextDims` and are registered with
:func:`register_text_encoder`, which accepts those keywords: ``cls(dims: TextDims, **kwargs)``.

:class:`AttentionPooledTextEncoder` subclasses implement
:meth:`AttentionPooledTextEncoder.encode_sequence` (``ids [B, L], mask [B, L] -> [B, L, seq_dim]``,
zeros at padding); the base class pools the sequence with additive attention over the real tokens
and projects the pooled vector to ``out_dim``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torch import Tensor, nn

from medmodal.models.layers import AdditiveAttention
from medmodal.models.registry import register_with_dims
from medmodal.models.types import TextFeatures


@dataclass(frozen=True)
class TextDims:
    """The vocabulary and the widths of a text encoder (registry keywords of the same names).

    Attributes:
        vocab_size: tokenizer vocabulary size V (wired by the model factory).
        pad_id: padding token id (wired by the model factory).
        out_dim: width of the report vector ``TextFeatures.vector`` (the model width by default).
        embed_dim: width of the word embeddings.
    """

    vocab_size: int
    pad_id: int = 0
    out_dim: int = 256
    embed_dim: int = 128


Encoder = TypeVar("Encoder", bound=nn.Module)


def register_text_encoder(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: registers ``cls`` as text encoder ``name``, built from the registry's keywords
    as ``cls(TextDims(...the fields of TextDims...), **the others)`` (the encoder's options)."""
    return register_with_dims("text_encoder", name, TextDims)


class AttentionPooledTextEncoder(nn.Module):
    """Base class: ``forward(ids, mask) -> TextFeatures`` with word attention.

    Builds the word embedding ``embedding`` [V, embed_dim] (``pad_id`` kept at zero), the
    subclass's first parameter; the subclass builds its sequence model, then
    :meth:`build_pooling`.

    Attributes:
        out_dim: width of ``TextFeatures.vector``.
        seq_dim: width of ``TextFeatures.sequence``.
    """

    def __init__(self, dims: TextDims) -> None:
        super().__init__()
        self.embedding = nn.Embedding(dims.vocab_size, dims.embed_dim, padding_idx=dims.pad_id)

    def build_pooling(self, seq_dim: int, out_dim: int, attn_dim: int, dropout: float) -> None:
        """Create the attention pooling over ``seq_dim`` features and the projection to ``out_dim``."""
        self.seq_dim = seq_dim
        self.out_dim = out_dim
        self.attention = AdditiveAttention(seq_dim, attn_dim)
        self.vector_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(seq_dim, out_dim))

    def encode_sequence(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Contextual token features [B, L, seq_dim], zeros at padding."""
        raise NotImplementedError

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        """ids [B, L] long, mask [B, L] bool (True at real tokens) -> TextFeatures.

        ``vector`` [B, out_dim], ``sequence`` [B, L, seq_dim], ``attention`` [B, L]
        summing to 1 over real tokens; a row without tokens (missing text) gets zero
        attention and a finite vector (the projection's bias).
        """
        mask = mask.bool()
        sequence = self.encode_sequence(ids, mask)
        pooled, attention = self.attention(sequence, mask)
        return TextFeatures(
            vector=self.vector_proj(pooled), sequence=sequence, mask=mask, attention=attention
        )
