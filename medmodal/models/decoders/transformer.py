"""``transformer``: a pre-norm ``nn.TransformerDecoder`` report decoder.

The decoder's memory is ``[context token; memory regions]``: the fused vector projected
to one token, followed by the projected regions (image grid cells or text tokens), with a
learned type embedding telling them apart. Target tokens get learned positional
embeddings and a causal mask. ``step`` re-decodes the whole prefix (no key/value cache:
simple, and cheap for reports of tens of tokens); it returns no attention map.

Conditioned (``condition_dim`` K > 0, docs/reports.md): K prompt tokens join the memory, one
per finding, ``identity_k + condition_k * present_k`` (learned vectors), so every layer's
cross-attention can read which findings to report.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.decoders.base import DecoderDims, ReportDecoder, register_decoder
from medmodal.models.decoders.search import State
from medmodal.models.layers import LearnedPositions, pre_norm_layer


@register_decoder("transformer")
class TransformerReportDecoder(LearnedPositions, ReportDecoder):
    """Transformer decoder over ``[context; memory]``.

    Args:
        dims: vocabulary, widths and special ids (:class:`DecoderDims`); ``embed_dim`` is the model width.
        num_layers: decoder layers; num_heads: attention heads (must divide ``embed_dim``).
        ff_dim: feed-forward width; None = ``4 * embed_dim``.
        max_len: longest target (BOS included).
        dropout: in the layers.
    """

    def __init__(
        self,
        dims: DecoderDims,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int | None = None,
        max_len: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dims)
        embed_dim = dims.embed_dim
        self.build_positions(max_len)
        self.context_proj = nn.Linear(dims.context_dim, embed_dim)
        self.memory_proj = nn.Linear(dims.memory_dim, embed_dim)
        self.memory_type = nn.Embedding(2, embed_dim)  # 0 = context token, 1 = region
        self.dropout = nn.Dropout(dropout)
        layer = pre_norm_layer(nn.TransformerDecoderLayer, embed_dim, num_heads, ff_dim, dropout)
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embed_dim))
        self.output = nn.Linear(embed_dim, dims.vocab_size)
        self.prompt_identity = self.prompt_present = None
        if dims.condition_dim:
            self.prompt_identity = nn.Parameter(torch.randn(dims.condition_dim, embed_dim) * 0.02)
            self.prompt_present = nn.Parameter(torch.randn(dims.condition_dim, embed_dim) * 0.02)

    def prompt_tokens(self, condition: Tensor) -> Tensor:
        """condition [B, K] -> one prompt token per finding [B, K, E]."""
        identity, present = self.prompt_identity, self.prompt_present
        assert identity is not None and present is not None  # only a conditioned decoder has prompts
        weight = condition.to(present.dtype).unsqueeze(-1)
        return identity + weight * present

    def memory_tokens(
        self, context: Tensor, memory: Tensor, memory_mask: Tensor | None, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """-> (memory tokens [B, 1 + N (+ K), E], key padding mask [B, 1 + N (+ K)], True = ignore)."""
        context_token = self.context_proj(context).unsqueeze(1) + self.memory_type.weight[0]
        regions = self.memory_proj(memory) + self.memory_type.weight[1]
        tokens = torch.cat([context_token, regions], dim=1)
        real = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        if memory_mask is not None:
            real = memory_mask.bool()
        # The context token is always real, so no row is fully masked.
        padding = torch.cat([torch.zeros_like(real[:, :1]), ~real], dim=1)
        if self.prompt_identity is not None:
            assert condition is not None  # check_condition ran first (forward, generate)
            prompts = self.prompt_tokens(condition)
            tokens = torch.cat([tokens, prompts], dim=1)
            padding = torch.cat(
                [padding, torch.zeros_like(padding[:, :1]).expand(-1, prompts.shape[1])], dim=1
            )
        return tokens, padding

    def decode(self, prefix: Tensor, memory: Tensor, memory_padding: Tensor) -> Tensor:
        """prefix ids [B, t] -> hidden states [B, t, E] (causal: position i sees prefix[:, :i+1])."""
        x = self.dropout(self.embed_with_positions(prefix, "target"))
        causal = nn.Transformer.generate_square_subsequent_mask(
            prefix.shape[1], device=prefix.device, dtype=x.dtype
        )
        return self.decoder(
            x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=memory_padding
        )

    def teacher_forced(self, inputs: Tensor, state: State) -> Tensor:
        """inputs [B, T-1] (BOS first), state of :meth:`init_state` -> logits [B, T-1, V] (all at once)."""
        return self.output(self.decode(inputs, state["memory"], state["memory_padding"]))

    def init_state(
        self, context: Tensor, memory: Tensor, memory_mask: Tensor | None, condition: Tensor | None = None
    ) -> State:
        """-> state with the memory tokens, their padding mask and an empty prefix [B, 0]."""
        memory_tokens, padding = self.memory_tokens(context, memory, memory_mask, condition)
        prefix = torch.empty(context.shape[0], 0, dtype=torch.long, device=context.device)
        return {"memory": memory_tokens, "memory_padding": padding, "prefix": prefix}

    def step(self, state: State, tokens: Tensor) -> tuple[Tensor, State, None]:
        """tokens [B'] -> (log-probs of the next token [B', V], state with the longer prefix, None)."""
        prefix = torch.cat([state["prefix"], tokens.unsqueeze(1)], dim=1)
        hidden = self.decode(prefix, state["memory"], state["memory_padding"])[:, -1]
        return torch.log_softmax(self.output(hidden), dim=-1), {**state, "prefix": prefix}, None
