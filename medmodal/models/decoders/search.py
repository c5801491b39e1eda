"""Greedy and beam search, shared by every report decoder.

A decoder exposes ``pad_id``, ``bos_id``, ``eos_id``, ``vocab_size`` and

    step(state, tokens [B']) -> (log_probs [B', V], new_state, attention [B', N] or None)

where ``state`` is a dict of batch-first tensors (B' = B, or B * beam_size in beam search):
the search reorders beams by indexing dim 0 of every tensor in it. ``step`` consumes the
previous token (BOS first) and scores the next one.

Scores are log-probabilities under the model, with PAD and BOS never generated. A
sequence's score is ``sum(log p) / length ** length_penalty`` (length counts the EOS).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from medmodal.models.types import GenerationOutput

State = dict[str, Tensor]


class Steppable(Protocol):
    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def step(self, state: State, tokens: Tensor) -> tuple[Tensor, State, Tensor | None]: ...


def select_state(state: State, rows: Tensor) -> State:
    """Every tensor of ``state`` indexed by ``rows`` along the batch dimension."""
    return {key: value.index_select(0, rows) for key, value in state.items()}


def repeat_state(state: State, times: int) -> State:
    """Each batch row repeated ``times`` times in a row: [B, ...] -> [B * times, ...]."""
    return {key: value.repeat_interleave(times, dim=0) for key, value in state.items()}


def forbid_special_tokens(log_probs: Tensor, decoder: Steppable) -> Tensor:
    """``log_probs`` [.., V] with PAD and BOS set to -inf (they are never generated)."""
    special = torch.tensor(sorted({decoder.pad_id, decoder.bos_id}), device=log_probs.device)
    return log_probs.index_fill(-1, special, float("-inf"))


def normalise(score: Tensor, length: Tensor, length_penalty: float) -> Tensor:
    """Length-normalised score ``score / length ** length_penalty``."""
    return score / length.clamp_min(1).to(score.dtype) ** length_penalty


def greedy_search(
    decoder: Steppable, state: State, batch_size: int, max_len: int, length_penalty: float = 1.0
) -> GenerationOutput:
    """Most likely next token at every step until EOS or ``max_len`` tokens."""
    device = next(iter(state.values())).device
    tokens = torch.full((batch_size,), decoder.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    score = torch.zeros(batch_size, device=device)
    length = torch.zeros(batch_size, dtype=torch.long, device=device)
    generated: list[Tensor] = []
    attentions: list[Tensor] = []
    for _ in range(max_len):
        log_probs, state, attention = decoder.step(state, tokens)
        log_probs = forbid_special_tokens(log_probs, decoder)
        best_lp, best = log_probs.max(dim=-1)
        active = ~finished
        tokens = torch.where(active, best, torch.full_like(best, decoder.pad_id))
        score = score + torch.where(active, best_lp, torch.zeros_like(best_lp))
        length = length + active.long()
        generated.append(tokens)
        if attention is not None:
            attentions.append(attention * active.unsqueeze(-1).to(attention.dtype))
        finished = finished | (tokens == decoder.eos_id)
        if bool(finished.all()):
            break
    return GenerationOutput(
        ids=torch.stack(generated, dim=1),
        attention=torch.stack(attentions, dim=1) if attentions else None,
        scores=normalise(score, length, length_penalty),
    )


def beam_search(
    decoder: Steppable,
    state: State,
    batch_size: int,
    max_len: int,
    beam_size: int,
    length_penalty: float = 1.0,
) -> GenerationOutput:
    """Batched beam search with length-normalised scores.

    Each of the ``beam_size`` slots per sample holds one hypothesis, active or finished
    (ended by EOS). At every step the candidates are the V extensions of each active
    hypothesis and each finished hypothesis itself (score frozen); the ``beam_size`` best
    by normalised score are kept. Stops when every kept hypothesis is finished or after
    ``max_len`` tokens; returns each sample's best hypothesis.
    """
    k, vocab = beam_size, decoder.vocab_size
    device = next(iter(state.values())).device
    state = repeat_state(state, k)
    tokens = torch.full((batch_size * k,), decoder.bos_id, dtype=torch.long, device=device)
    score = torch.zeros(batch_size, k, device=device)
    score[:, 1:] = float("-inf")  # all slots start identical: expand the first only
    length = torch.zeros(batch_size, k, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, k, dtype=torch.bool, device=device)
    first_row = torch.arange(batch_size, device=device).unsqueeze(1) * k  # [B, 1]
    sequences: Tensor | None = None  # [B * k, t]
    attentions: Tensor | None = None  # [B * k, t, N]
    for t in range(max_len):
        log_probs, state, attention = decoder.step(state, tokens)
        log_probs = forbid_special_tokens(log_probs, decoder).view(batch_size, k, vocab)
        candidate_score, ranking = _candidates(
            score, length, finished, log_probs, t + 1, decoder.pad_id, length_penalty
        )
        chosen = ranking.view(batch_size, k * vocab).topk(k, dim=-1).indices  # [B, k]
        origin, token = chosen // vocab, chosen % vocab
        score = candidate_score.view(batch_size, k * vocab).gather(1, chosen)
        was_finished = finished.gather(1, origin)
        length = torch.where(was_finished, length.gather(1, origin), torch.full_like(length, t + 1))
        finished = was_finished | (token == decoder.eos_id)
        rows = (first_row + origin).view(-1)
        state = select_state(state, rows)
        sequences = _extend(sequences, rows, token.view(-1))
        if attention is not None:
            active = (~was_finished).view(-1, 1).to(attention.dtype)
            attentions = _extend(attentions, rows, attention.index_select(0, rows) * active)
        tokens = token.view(-1)
        if bool(finished.all()):
            break
    best = normalise(score, length, length_penalty).argmax(dim=1)  # [B]
    rows = first_row.squeeze(1) + best
    best_length = length.gather(1, best.unsqueeze(1)).squeeze(1)
    keep = int(best_length.max().clamp_min(1))
    assert sequences is not None  # max_len >= 1
    return GenerationOutput(
        ids=sequences.index_select(0, rows)[:, :keep],
        attention=attentions.index_select(0, rows)[:, :keep] if attentions is not None else None,
        scores=normalise(score.gather(1, best.unsqueeze(1)).squeeze(1), best_length, length_penalty),
    )


def _candidates(
    score: Tensor,
    length: Tensor,
    finished: Tensor,
    log_probs: Tensor,
    new_length: int,
    pad_id: int,
    length_penalty: float,
) -> tuple[Tensor, Tensor]:
    """Scores of every candidate continuation, raw and length-normalised: both [B, k, V].

    An active hypothesis (score, length [B, k]) extended by token v scores
    ``score + log_probs[..., v]`` at ``new_length``; a finished one has the single candidate
    "append PAD" with its score and length unchanged (all others -inf).
    """
    kept = torch.full_like(log_probs, float("-inf"))
    kept[..., pad_id] = score
    raw = torch.where(finished.unsqueeze(-1), kept, score.unsqueeze(-1) + log_probs)
    lengths = torch.where(finished, length, torch.full_like(length, new_length)).unsqueeze(-1)
    return raw, normalise(raw, lengths, length_penalty)


def _extend(history: Tensor | None, rows: Tensor, step: Tensor) -> Tensor:
    """``history`` [B', t, ...] reordered by ``rows`` with ``step`` [B', ...] appended -> [B', t + 1, ...]."""
    if history is None:
        return step.unsqueeze(1)
    return torch.cat([history.index_select(0, rows), step.unsqueeze(1)], dim=1)
