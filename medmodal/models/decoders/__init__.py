"""Report-generation decoders; importing this package registers them.

Contract: ``(vocab_size, embed_dim, context_dim, memory_dim, pad_id, bos_id, eos_id, **kwargs)`` (the
registry's keywords; the classes here take the wired ones as one :class:`DecoderDims`, see
:mod:`~medmodal.models.decoders.base`);
teacher-forced ``forward(target_ids, context, memory, memory_mask=None, condition=None) -> logits [B, T-1, V]``;
``generate(context, memory, memory_mask=None, max_len=80, beam_size=1, condition=None) -> GenerationOutput``.
``condition`` [B, K]: the findings, for a decoder built with ``condition_dim=K`` (docs/reports.md).
"""

from medmodal.models.decoders import lstm, transformer  # noqa: F401  (registration)
from medmodal.models.decoders.base import DecoderDims, ReportDecoder, register_decoder
from medmodal.models.decoders.search import beam_search, greedy_search

__all__ = ["DecoderDims", "ReportDecoder", "beam_search", "greedy_search", "register_decoder"]
