"""``bilstm_attention``: embedding -> bidirectional LSTM -> word-level additive attention.

The report encoder of arXiv 2405.17459. Padding is skipped with packed sequences, so the
backward direction starts at each report's last real token. Padding must be at the end
of each row (right padding, as the tokenizer produces).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medmodal.models.text_encoders.base import AttentionPooledTextEncoder, TextDims, register_text_encoder


@register_text_encoder("bilstm_attention")
class BiLSTMAttentionEncoder(AttentionPooledTextEncoder):
    """BiLSTM report encoder with attention pooling.

    Args:
        dims: vocabulary and widths (:class:`TextDims`).
        hidden_dim: LSTM width per direction (``seq_dim = 2 * hidden_dim``); None = ``out_dim // 2``.
        num_layers: stacked LSTM layers.
        attn_dim: width of the attention scoring layer.
        dropout: on embeddings, between LSTM layers and before the projection.
    """

    def __init__(
        self,
        dims: TextDims,
        hidden_dim: int | None = None,
        num_layers: int = 1,
        attn_dim: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(dims)
        hidden_dim = hidden_dim or max(dims.out_dim // 2, 1)
        self.embed_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            dims.embed_dim,
            hidden_dim,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.build_pooling(2 * hidden_dim, dims.out_dim, attn_dim, dropout)

    def encode_sequence(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids [B, L], mask [B, L] -> BiLSTM states [B, L, 2 * hidden_dim], zeros at padding."""
        embedded = self.embed_dropout(self.embedding(ids))
        # pack_padded_sequence rejects length 0: run empty rows on one (pad) token, then zero them.
        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])
        return states * mask.unsqueeze(-1).to(states.dtype)
