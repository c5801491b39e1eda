"""What every report decoder shares: the constructor contract and ``generate``.

A decoder subclass implements

- ``forward(target_ids [B, T], context [B, Dc], memory [B, N, Dm], memory_mask [B, N] | None)
  -> logits [B, T-1, V]`` (teacher forcing: position t predicts ``target_ids[:, t+1]``);
- ``init_state(context, memory, memory_mask) -> state`` (dict of batch-first tensors);
- ``step(state, tokens [B']) -> (log_probs [B', V], state, attention [B', N] | None)``;

and inherits :meth:`ReportDecoder.generate`, which drives ``step`` with the shared greedy
or beam search (:mod:`medmodal.models.decoders.search`).

``memory_mask`` is True at real memory entries (image regions are all real; text tokens
use the text mask); None means all real.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.decoders.search import State, beam_search, greedy_search
from medmodal.models.types import GenerationOutput


class ReportDecoder(nn.Module):
    """Base class of the report decoders (see the module docstring)."""

    def __init__(self, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id

    def init_state(self, context: Tensor, memory: Tensor, memory_mask: Tensor | None) -> State:
        raise NotImplementedError

    def step(self, state: State, tokens: Tensor) -> tuple[Tensor, State, Tensor | None]:
        raise NotImplementedError

    @torch.no_grad()
    def generate(
        self,
        context: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        max_len: int = 80,
        beam_size: int = 1,
        length_penalty: float = 1.0,
    ) -> GenerationOutput:
        """Generate reports: greedy when ``beam_size == 1``, else beam search.

        Args:
            context: [B, Dc] fused vector. memory: [B, N, Dm] regions. memory_mask: [B, N] or None.
            max_len: most tokens generated per report (EOS included).
            beam_size: hypotheses kept per report.
            length_penalty: exponent of the length in the score normalisation (0 = raw sum).

        Returns:
            GenerationOutput(ids [B, T'] without BOS, ending at EOS, padded with pad_id;
            attention [B, T', N] or None; scores [B]).
        """
        if max_len < 1 or beam_size < 1:
            raise ValueError(f"max_len and beam_size must be >= 1, got {max_len} and {beam_size}")
        state = self.init_state(context, memory, memory_mask)
        batch_size = context.shape[0]
        if beam_size == 1:
            return greedy_search(self, state, batch_size, max_len, length_penalty)
        return beam_search(self, state, batch_size, max_len, beam_size, length_penalty)
