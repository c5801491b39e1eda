"""Small building blocks shared by several model parts.

- :func:`masked_softmax` / :func:`masked_mean`: reductions over a padded axis that stay
  finite when a row has no real entry (missing text).
- :class:`AdditiveAttention`: Bahdanau attention. Without a query it is the word-level
  attention pooling of the text encoders; with a query it is the decoder's attention
  over memory regions.
- :func:`mlp`: Linear-activation-dropout stacks.
- :func:`cell_centres`: normalised coordinates of image grid cells.
- :func:`first_position_if_empty`: key padding masks that never mask a whole row, for
  ``nn.MultiheadAttention`` / ``nn.Transformer*`` (which return NaN on all-masked rows).
- :func:`pre_norm_layer` / :class:`LearnedPositions`: the pre-norm GELU Transformer layer and the
  learned position embeddings of the Transformer text encoder and report decoder.
"""

from __future__ import annotations

import itertools
from typing import TypeVar, cast

import torch
from torch import Tensor, nn


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` restricted to ``mask`` (True = real entry).

    Weights are exactly zero on masked entries; a row without any real entry gets all
    zero weights (not NaN).
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=dim) * mask
    return weights / weights.sum(dim=dim, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` [B, N, D] over real entries of ``mask`` [B, N] -> [B, D].

    Rows without any real entry give zeros.
    """
    if mask is None:
        return values.mean(dim=1)
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def first_position_if_empty(mask: Tensor) -> Tensor:
    """``mask`` [B, N] (True = real) with position 0 switched on in rows that have none.

    Attention over an all-masked row is NaN in PyTorch; callers attend to position 0
    instead and zero the result of such rows themselves.
    """
    empty = ~mask.any(dim=1)
    if not bool(empty.any()):
        return mask
    fixed = mask.clone()
    fixed[empty, 0] = True
    return fixed


def cell_centres(height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """x [w] and y [h] centres of the cells of an h x w grid, normalised to [0, 1]."""
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    return xs, ys


def mlp(in_dim: int, hidden_dim: int, out_dim: int, dropout: float = 0.0, layers: int = 2) -> nn.Sequential:
    """``layers`` Linear layers with GELU and dropout between them: [.., in_dim] -> [.., out_dim]."""
    if layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got {layers}")
    dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
    modules: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        modules.append(nn.Linear(a, b))
        if i < layers - 1:
            modules += [nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*modules)


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention over N keys, optionally conditioned on a query.

    ``e_n = v^T tanh(W_k k_n + W_q q)``, ``a = softmax(e)`` over the real keys,
    ``context = sum_n a_n k_n``. With ``query_dim=0`` there is no query: a learned
    attention pooling (word-level attention of the text encoders).

    Args:
        key_dim: width D of the keys (also the width of the returned context).
        attn_dim: width of the hidden scoring layer.
        query_dim: width of the query, 0 for none.
    """

    def __init__(self, key_dim: int, attn_dim: int = 128, query_dim: int = 0) -> None:
        super().__init__()
        self.key_proj = nn.Linear(key_dim, attn_dim)
        self.query_proj = nn.Linear(query_dim, attn_dim, bias=False) if query_dim else None
        self.energy = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``W_k keys``: [B, N, key_dim] -> [B, N, attn_dim]; compute once, reuse per query."""
        return self.key_proj(keys)

    def forward(
        self,
        keys: Tensor,
        mask: Tensor | None = None,
        query: Tensor | None = None,
        projected_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend over ``keys``.

        Args:
            keys: [B, N, D] values to pool.
            mask: [B, N] bool, True at real keys; None = all real.
            query: [B, query_dim], required iff built with ``query_dim > 0``.
            projected_keys: [B, N, attn_dim] from :meth:`project_keys` (optional cache).

        Returns:
            context [B, D] and weights [B, N] (sum to 1 over real keys; zero rows where
            no key is real, and then a zero context).
        """
        hidden = projected_keys if projected_keys is not None else self.project_keys(keys)
        if self.query_proj is not None:
            if query is None:
                raise ValueError("this attention was built with a query; pass query=")
            hidden = hidden + self.query_proj(query).unsqueeze(1)
        weights = masked_softmax(self.energy(torch.tanh(hidden)).squeeze(-1), mask)
        context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)
        return context, weights


class ProjectionHead(nn.Module):
    """ConVIRT's two-layer projection: Linear -> ReLU -> Linear; [.., in_dim] -> [.., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SafeBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` that normalises a training batch of one sample with the running statistics
    (as in eval mode, without updating them) instead of failing: a batch may hold a single image
    when the others lack one."""

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C] -> [B, C]."""
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def adaptive_pool_weights(size_in: int, size_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[size_out, size_in] averaging weights of PyTorch's adaptive average pooling along one axis
    (bin i covers floor(i * n / m) .. ceil((i + 1) * n / m))."""
    rows = []
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -(-((i + 1) * size_in) // size_out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)])
    return torch.tensor(rows, dtype=dtype, device=device)  # a constant in an exported graph


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that also exports to ONNX when the input side is not a multiple
    of the output side (the TorchScript exporter refuses that case): there the pooling is written
    as two small averaging matrices, which gives the same numbers."""

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, H, W] -> [B, C, out_h, out_w] (``output_size`` an int or a pair of ints)."""
        # this class is built with ints only (torch also allows None = the input's size)
        size = cast("int | tuple[int, int]", self.output_size)
        out_h, out_w = (size, size) if isinstance(size, int) else size
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if height % out_h == 0 and width % out_w == 0:
            return super().forward(x)
        rows = adaptive_pool_weights(height, out_h, x.dtype, x.device)
        cols = adaptive_pool_weights(width, out_w, x.dtype, x.device)
        return torch.matmul(torch.matmul(rows, x), cols.t())  # [i, h] @ [B, C, h, w] @ [w, j]


TransformerLayer = TypeVar("TransformerLayer", nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def pre_norm_layer(
    layer_type: type[TransformerLayer], width: int, num_heads: int, ff_dim: int | None, dropout: float
) -> TransformerLayer:
    """A pre-norm, GELU, batch-first ``nn.TransformerEncoderLayer`` or ``nn.TransformerDecoderLayer``
    of ``width`` with ``num_heads`` heads and a feed-forward width of ``ff_dim`` (None = ``4 * width``)."""
    return layer_type(
        width,
        num_heads,
        dim_feedforward=ff_dim or 4 * width,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


class LearnedPositions:
    """Mixin of the Transformer text encoder and report decoder (``nn.Module`` subclasses with a word
    embedding ``embedding``): learned position embeddings ``position`` [max_len, E] added to the words."""

    embedding: nn.Embedding
    position: nn.Embedding
    max_len: int

    def build_positions(self, max_len: int) -> None:
        """Create ``position``: one learned vector per position below ``max_len``, as wide as ``embedding``."""
        self.max_len = max_len
        self.position = nn.Embedding(max_len, self.embedding.embedding_dim)

    def embed_with_positions(self, ids: Tensor, what: str) -> Tensor:
        """ids [B, L] -> word + position embeddings [B, L, E]; a ValueError naming ``what`` if L > ``max_len``."""
        length = ids.shape[1]
        if length > self.max_len:
            raise ValueError(f"{what} of {length} tokens is longer than max_len={self.max_len}")
        return self.embedding(ids) + self.position(torch.arange(length, device=ids.device))
