"""``lstm``: "show, attend and tell" (Xu et al., 2015, arXiv 1502.03044) report decoder.

At each step the previous hidden state attends (additive attention) over the memory
regions; a gate ``sigmoid(W_beta h)`` scales the attended vector; the LSTM cell reads
``[word embedding; gated attended memory]``; the next-word logits read
``[hidden; attended memory]``. The initial hidden and cell states come from the context
(fused) vector.

Conditioned (``condition_dim`` K > 0, docs/reports.md): the findings [B, K] are embedded
once (a linear map: the sum of the present findings' vectors) and that vector joins the
context in the initial state, the LSTM input and the output layer at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.decoders.base import DecoderDims, ReportDecoder, register_decoder
from medmodal.models.decoders.search import State
from medmodal.models.layers import AdditiveAttention


@register_decoder("lstm")
class LSTMAttentionDecoder(ReportDecoder):
    """LSTM decoder with attention over memory regions.

    Args:
        dims: vocabulary, widths and special ids (:class:`DecoderDims`).
        hidden_dim: LSTM width; None = ``embed_dim``.
        attn_dim: width of the attention scoring layer.
        dropout: on embeddings and before the output layer.
    """

    def __init__(
        self, dims: DecoderDims, hidden_dim: int | None = None, attn_dim: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__(dims)
        embed_dim = dims.embed_dim
        hidden_dim = hidden_dim or embed_dim
        cond = embed_dim if dims.condition_dim else 0  # width of the embedded findings
        self.condition = nn.Linear(dims.condition_dim, cond) if dims.condition_dim else None
        self.init_hidden = nn.Linear(dims.context_dim + cond, hidden_dim)
        self.init_cell = nn.Linear(dims.context_dim + cond, hidden_dim)
        self.attention = AdditiveAttention(dims.memory_dim, attn_dim, query_dim=hidden_dim)
        self.attention_gate = nn.Linear(hidden_dim, dims.memory_dim)
        self.cell = nn.LSTMCell(embed_dim + dims.memory_dim + cond, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim + dims.memory_dim + cond, dims.vocab_size)

    def init_state(
        self, context: Tensor, memory: Tensor, memory_mask: Tensor | None, condition: Tensor | None = None
    ) -> State:
        """context [B, Dc], memory [B, N, Dm], condition [B, K] or None -> state (h, c from the
        context and embedded findings; memory and its keys; the embedded findings [B, E])."""
        state = {"memory": memory, "keys": self.attention.project_keys(memory)}
        if self.condition is not None:
            assert condition is not None  # check_condition ran first (forward, generate)
            state["condition"] = self.condition(condition.to(context.dtype))
        start = self.with_condition(context, state)
        state["hidden"] = torch.tanh(self.init_hidden(start))
        state["cell"] = torch.tanh(self.init_cell(start))
        if memory_mask is not None:
            state["memory_mask"] = memory_mask.bool()
        return state

    @staticmethod
    def with_condition(features: Tensor, state: State) -> Tensor:
        """features [B', D] -> [B', D + E] with the embedded findings appended (unchanged if unconditioned)."""
        if "condition" not in state:
            return features
        return torch.cat([features, state["condition"]], dim=-1)

    def embed(self, tokens: Tensor) -> Tensor:
        """Token ids [...] -> word embeddings [..., embed_dim] (with dropout)."""
        return self.dropout(self.embedding(tokens))

    def advance(self, state: State, words: Tensor) -> tuple[Tensor, State, Tensor]:
        """One step on embedded words [B', E] -> (output features [B', hidden + Dm (+ E)], state, attention [B', N])."""
        attended, weights = self.attention(
            state["memory"], state.get("memory_mask"), query=state["hidden"], projected_keys=state["keys"]
        )
        attended = torch.sigmoid(self.attention_gate(state["hidden"])) * attended
        cell_input = self.with_condition(torch.cat([words, attended], dim=-1), state)
        hidden, cell = self.cell(cell_input, (state["hidden"], state["cell"]))
        features = self.with_condition(torch.cat([hidden, attended], dim=-1), state)
        return features, {**state, "hidden": hidden, "cell": cell}, weights

    def logits(self, features: Tensor) -> Tensor:
        """Output features [..., hidden + Dm (+ E)] -> next-token logits [..., V]."""
        return self.output(self.dropout(features))

    def step(self, state: State, tokens: Tensor) -> tuple[Tensor, State, Tensor]:
        """tokens [B'] -> (log-probs of the next token [B', V], state, attention [B', N])."""
        features, state, weights = self.advance(state, self.embed(tokens))
        return torch.log_softmax(self.logits(features), dim=-1), state, weights

    def teacher_forced(self, inputs: Tensor, state: State) -> Tensor:
        """inputs [B, T-1] (BOS first), state of :meth:`init_state` -> logits [B, T-1, V] (a step a token)."""
        words = self.embed(inputs)  # all steps at once
        outputs = []
        for t in range(words.shape[1]):
            features, state, _ = self.advance(state, words[:, t])
            outputs.append(features)
        return self.logits(torch.stack(outputs, dim=1))
