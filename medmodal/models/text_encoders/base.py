"""What the text encoders share: word-level attention pooling and the output projection.

A subclass implements :meth:`AttentionPooledTextEncoder.encode_sequence`
(``ids [B, L], mask [B, L] -> [B, L, seq_dim]``, zeros at padding); the base class pools
the sequence with additive attention over the real tokens and projects the pooled vector
to ``out_dim``.
"""

from __future__ import annotations

from torch import Tensor, nn

from medmodal.models.layers import AdditiveAttention
from medmodal.models.types import TextFeatures


class AttentionPooledTextEncoder(nn.Module):
    """Base class: ``forward(ids, mask) -> TextFeatures`` with word attention.

    Attributes:
        out_dim: width of ``TextFeatures.vector``.
        seq_dim: width of ``TextFeatures.sequence``.
    """

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
