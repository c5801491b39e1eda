"""Report (text) encoders; importing this package registers them.

Contract: ``(vocab_size, out_dim, pad_id, **kwargs)`` (the registry's keywords; the classes here take
them as one :class:`TextDims`, see :mod:`~medmodal.models.text_encoders.base`); attributes ``out_dim``,
``seq_dim``; ``forward(ids [B, L], mask [B, L]) -> TextFeatures(vector, sequence, mask, attention)``.
"""

from medmodal.models.text_encoders import bilstm_attention, ngram_bag, transformer  # noqa: F401  (registration)
from medmodal.models.text_encoders.base import AttentionPooledTextEncoder, TextDims, register_text_encoder

__all__ = ["AttentionPooledTextEncoder", "TextDims", "register_text_encoder"]
