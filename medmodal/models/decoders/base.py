"""What every report decoder shares: the constructor contract and ``generate``.

A decoder subclass implements

- ``forward(target_ids [B, T], context [B, Dc], memory [B, N, Dm], memory_mask [B, N] | None)
  -> logits [B, T-1, V]`` (teacher forcing: position t predicts ``target_ids[:, t+1]``);
- ``init_state(context, memory, memory_mask, condition) -> state`` (dict of batch-first tensors);
- ``step(state, tokens [B']) -> (log_probs [B', V], state, attention [B', N] | None)``;

and inherits :meth:`ReportDecoder.generate`, which drives ``step`` with the shared greedy
or beam search (:mod:`medmodal.models.decoders.search`).

``memory_mask`` is True at real memory entries (image regions are all real; text tokens
use the text mask); None means all real.

Diagnosis-driven generation (docs/reports.md): a decoder built with ``condition_dim = K > 0``
also takes ``condition`` [B, K] (the findings, 0/1 or probabilities) in ``forward``,
``init_state`` and ``generate`` and reads it at every step; with ``condition_dim = 0`` (the
default) ``condition`` must be None and the decoder is unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.decoders.search import State, beam_search, greedy_search
from medmodal.models.types import GenerationOutput


class ReportDecoder(nn.Module):
    """Base class of the report decoders (see the module docstring)."""

    def __init__(
        self, vocab_size: int, pad_id: int, bos_id: int, eos_id: int, condition_dim: int = 0
    ) -> None:
        super().__init__()
        if condition_dim < 0:
            raise ValueError(f"condition_dim must be >= 0, got {condition_dim}")
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.condition_dim = condition_dim

    def check_condition(self, condition: Tensor | None, batch_size: int) -> None:
        """Raise unless ``condition`` is [batch_size, condition_dim] (None when ``condition_dim`` is 0)."""
        if self.condition_dim == 0:
            if condition is not None:
                raise ValueError(
                    "this decoder was built without conditioning (condition_dim 0); pass condition=None"
                )
            return
        if condition is None or tuple(condition.shape) != (batch_size, self.condition_dim):
            got = None if condition is None else tuple(condition.shape)
            raise ValueError(
                f"condition must be [{batch_size}, {self.condition_dim}] (the findings), got {got}"
            )

    def init_state(
        self, context: Tensor, memory: Tensor, memory_mask: Tensor | None, condition: Tensor | None = None
    ) -> State:
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
        condition: Tensor | None = None,
    ) -> GenerationOutput:
        """Generate reports: greedy when ``beam_size == 1``, else beam search.

        Args:
            context: [B, Dc] fused vector. memory: [B, N, Dm] regions. memory_mask: [B, N] or None.
            max_len: most tokens generated per report (EOS included).
            beam_size: hypotheses kept per report.
            length_penalty: exponent of the length in the score normalisation (0 = raw sum).
            condition: [B, condition_dim] findings of a conditioned decoder, else None.

        Returns:
            GenerationOutput(ids [B, T'] without BOS, ending at EOS, padded with pad_id;
            attention [B, T', N] or None; scores [B]).
        """
        if max_len < 1 or beam_size < 1:
            raise ValueError(f"max_len and beam_size must be >= 1, got {max_len} and {beam_size}")
        batch_size = context.shape[0]
        self.check_condition(condition, batch_size)
        state = self.init_state(context, memory, memory_mask, condition)
        if beam_size == 1:
            return greedy_search(self, state, batch_size, max_len, length_penalty)
        return beam_search(self, state, batch_size, max_len, beam_size, length_penalty)
