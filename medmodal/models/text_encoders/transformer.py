"""``transformer``: a small pre-norm Transformer encoder with word-level attention pooling.

Token embeddings plus learned positional embeddings, ``nn.TransformerEncoder``
(pre-norm, GELU), padding excluded with a key padding mask, then the same attention
pooling as ``bilstm_attention``.
"""

from __future__ import annotations

from torch import Tensor, nn

from medmodal.models.layers import LearnedPositions, first_position_if_empty, pre_norm_layer
from medmodal.models.text_encoders.base import AttentionPooledTextEncoder, TextDims, register_text_encoder


@register_text_encoder("transformer")
class TransformerTextEncoder(LearnedPositions, AttentionPooledTextEncoder):
    """Transformer report encoder.

    Args:
        dims: vocabulary and widths (:class:`TextDims`); ``embed_dim`` is the model width (``seq_dim``).
        num_layers: encoder layers.
        num_heads: attention heads (must divide ``embed_dim``).
        ff_dim: feed-forward width; None = ``4 * embed_dim``.
        max_len: longest input; positions beyond it are an error.
        attn_dim: width of the pooling attention's scoring layer.
        dropout: in the layers and before the projection.
    """

    def __init__(
        self,
        dims: TextDims,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int | None = None,
        max_len: int = 512,
        attn_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dims)
        embed_dim = dims.embed_dim
        self.build_positions(max_len)
        self.embed_dropout = nn.Dropout(dropout)
        layer = pre_norm_layer(nn.TransformerEncoderLayer, embed_dim, num_heads, ff_dim, dropout)
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.build_pooling(embed_dim, dims.out_dim, attn_dim, dropout)

    def encode_sequence(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L], mask [B, L] -> token features [B, L, embed_dim], zeros at padding."""
        x = self.embed_dropout(self.embed_with_positions(ids, "text"))
        # Rows without tokens attend to position 0 (an all-masked row would give NaN); zeroed below.
        x = self.encoder(x, src_key_padding_mask=~first_position_if_empty(mask))
        return x * mask.unsqueeze(-1).to(x.dtype)
