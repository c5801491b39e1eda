"""What every report decoder shares: the constructor contract and ``generate``.

The registry builds a decoder with the keywords ``(vocab_size, embed_dim, context_dim, memory_dim,
pad_id, bos_id, eos_id, **kwargs)`` (plus ``condition_dim`` for a conditioned one): the model
factory wires all but ``embed_dim`` (which defaults to the model width) and ``kwargs`` come from the
config. The classes of this package take the vocabulary, the widths and the special ids as one
:class:`DecoderDims` and are registered with :func:`register_decoder`, which accepts those
keywords: ``cls(dims: DecoderDims, **kwargs)``.

A decoder subclass implements

- ``init_state(context, memory, memory_mask, condition) -> state`` (dict of batch-first tensors);
- ``teacher_forced(inputs [B, T-1], state) -> logits [B, T-1, V]`` (position t predicts the
  token after ``inputs[:, t]``);
- ``step(state, tokens [B']) -> (log_probs [B', V], state, attention [B', N] | None)``;

and inherits :meth:`ReportDecoder.forward` (``forward(target_ids [B, T], context [B, Dc],
memory [B, N, Dm], memory_mask [B, N] | None, condition) -> logits [B, T-1, V]``, teacher
forcing: position t predicts ``target_ids[:, t+1]``) and :meth:`ReportDecoder.generate`, which
drives ``step`` with the shared greedy or beam search (:mod:`medmodal.models.decoders.search`).

``memory_mask`` is True at real memory entries (image regions are all real; text tokens
use the text mask); None means all real.

Diagnosis-driven generation (docs/reports.md): a decoder built with ``condition_dim = K > 0``
also takes ``condition`` [B, K] (the findings, 0/1 or probabilities) in ``forward``,
``init_state`` and ``generate`` and reads it at every step; with ``condition_dim = 0`` (the
default) ``condition`` must be None and the decoder is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from medmodal.models.decoders.search import State, beam_search, greedy_search
from medmodal.models.registry import register_with_dims
from medmodal.models.types import GenerationOutput


@dataclass(frozen=True)
class DecoderDims:
    """The vocabulary, the widths and the special ids of a report decoder (registry keywords of the
    same names; the model factory wires all but ``embed_dim``, whose default is the model width).

    Attributes:
        vocab_size, pad_id, bos_id, eos_id: tokenizer vocabulary and special ids.
        embed_dim: width of the word embeddings (the model width of the ``transformer`` decoder).
        context_dim: width of the context (fused) vector.
        memory_dim: width of the memory regions.
        condition_dim: number of findings K the decoder is conditioned on (0 = none).
    """

    vocab_size: int
    embed_dim: int
    context_dim: int
    memory_dim: int
    pad_id: int
    bos_id: int
    eos_id: int
    condition_dim: int = 0


class ReportDecoder(nn.Module):
    """Base class of the report decoders (see the module docstring).

    Keeps ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id`` (read by the search) and
    ``condition_dim`` of the :class:`DecoderDims` as attributes and builds the word embedding
    ``embedding`` [V, embed_dim] (``pad_id`` kept at zero), every decoder's first parameter.
    """

    def __init__(self, dims: DecoderDims) -> None:
        super().__init__()
        if dims.condition_dim < 0:
            raise ValueError(f"condition_dim must be >= 0, got {dims.condition_dim}")
        self.vocab_size = dims.vocab_size
        self.pad_id = dims.pad_id
        self.bos_id = dims.bos_id
        self.eos_id = dims.eos_id
        self.condition_dim = dims.condition_dim
        self.embedding = nn.Embedding(dims.vocab_size, dims.embed_dim, padding_idx=dims.pad_id)

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

    def teacher_forced(self, inputs: Tensor, state: State) -> Tensor:
        """inputs [B, T-1] (the targets without their last token), state of :meth:`init_state`
        -> logits [B, T-1, V]."""
        raise NotImplementedError

    def forward(
        self,
        target_ids: Tensor,
        context: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        condition: Tensor | None = None,
    ) -> Tensor:
        """Teacher forcing: target_ids [B, T] (BOS first) -> logits [B, T-1, V] for target_ids[:, 1:].
        condition: [B, K] findings of a conditioned decoder, else None."""
        self.check_condition(condition, target_ids.shape[0])
        return self.teacher_forced(
            target_ids[:, :-1], self.init_state(context, memory, memory_mask, condition)
        )

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


Decoder = TypeVar("Decoder", bound=ReportDecoder)


def register_decoder(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: registers ``cls`` as decoder ``name``, built from the registry's keywords as
    ``cls(DecoderDims(...the fields of DecoderDims...), **the others)`` (the decoder's options)."""
    return register_with_dims("decoder", name, DecoderDims)
