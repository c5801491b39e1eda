"""``ngram_bag``: a bag of word uni- and bigrams (fastText-style, Joulin et al. 2017).

Each report is the mean of the embeddings of its words and of its adjacent word pairs
(bigram ids hashed into ``num_buckets`` slots), summed by one ``nn.EmbeddingBag``, then
projected. It is the trainable counterpart of logistic regression on TF-IDF uni+bigrams:
on a few hundred short indications it learns in a handful of epochs, where a BiLSTM
trained from scratch has too little text to learn word order (docs/diagnosis.md).

``TextFeatures.sequence`` holds the unigram embeddings (for a decoder or cross-attention
to attend over) and ``attention`` the bag's uniform weights over the real words.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medmodal.models.text_encoders.base import TextDims, register_text_encoder
from medmodal.models.types import TextFeatures

_HASH_MULTIPLIER = 1_000_003  # a prime; (a * p + b) mod buckets spreads the pairs


def bigram_ids(ids: Tensor, mask: Tensor, vocab_size: int, num_buckets: int) -> tuple[Tensor, Tensor]:
    """Hashed ids of adjacent word pairs: ids, mask [B, L] -> (ids [B, L-1] in
    ``[vocab_size, vocab_size + num_buckets)``, mask [B, L-1] True where both words are real)."""
    if ids.shape[1] < 2:
        return ids.new_zeros((ids.shape[0], 0)), mask.new_zeros((mask.shape[0], 0))
    pair = (ids[:, :-1] * _HASH_MULTIPLIER + ids[:, 1:]) % num_buckets
    return vocab_size + pair, mask[:, :-1] & mask[:, 1:]


class HashedNgrams(nn.Module):
    """Base of the n-gram bag models (this encoder, :class:`~medmodal.models.wide.WideNgrams`): the
    vocabulary, the bigram hash slots and :meth:`ngrams`; an n-gram table has ``num_ngrams`` rows.

    Args:
        vocab_size: tokenizer vocabulary size V.
        pad_id: padding token id (padding never enters a bag).
        num_buckets: hash slots for bigrams (0 = unigrams only).
    """

    def __init__(self, vocab_size: int, pad_id: int, num_buckets: int) -> None:
        super().__init__()
        if num_buckets < 0:
            raise ValueError(f"num_buckets must be >= 0, got {num_buckets}")
        self.vocab_size = vocab_size
        self.num_buckets = num_buckets
        self.pad_id = pad_id
        self.num_ngrams = vocab_size + num_buckets

    def ngrams(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """ids, mask [B, L] -> n-gram ids [B, N] and their mask [B, N] (unigrams, then bigrams)."""
        if self.num_buckets == 0:
            return ids, mask
        pair_ids, pair_mask = bigram_ids(ids, mask, self.vocab_size, self.num_buckets)
        return torch.cat([ids, pair_ids], dim=1), torch.cat([mask, pair_mask], dim=1)


@register_text_encoder("ngram_bag")
class NgramBagEncoder(HashedNgrams):
    """Mean of uni+bigram embeddings -> dropout -> linear.

    Args:
        dims: vocabulary and widths (:class:`TextDims`); ``embed_dim`` is the n-gram embeddings'
            width (``seq_dim``); padding never enters the bag.
        num_buckets: hash slots for bigrams (0 = unigrams only).
        token_dropout: share of n-grams dropped from each bag in training (word dropout).
        dropout: before the projection.
    """

    def __init__(
        self, dims: TextDims, num_buckets: int = 16384, token_dropout: float = 0.1, dropout: float = 0.1
    ) -> None:
        super().__init__(dims.vocab_size, dims.pad_id, num_buckets)
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        self.token_dropout = token_dropout
        self.seq_dim = dims.embed_dim
        self.out_dim = dims.out_dim
        self.embedding = nn.EmbeddingBag(self.num_ngrams, dims.embed_dim, mode="sum")
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.vector_proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.embed_dim, dims.out_dim))

    def bag_weights(self, mask: Tensor) -> Tensor:
        """mask [B, N] -> per-n-gram weights [B, N]: 1 / (n-grams kept) on kept ones, else 0."""
        keep = mask
        if self.training and self.token_dropout > 0:
            dropped = torch.rand(mask.shape, device=mask.device) < self.token_dropout
            survivors = keep & ~dropped
            # Never empty a bag that had words: keep the original bag where all were dropped.
            keep = torch.where(survivors.any(dim=1, keepdim=True), survivors, keep)
        weights = keep.float()
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        """ids [B, L] long, mask [B, L] bool -> TextFeatures(vector [B, out_dim], sequence [B, L, embed_dim],
        mask, attention [B, L] uniform over real words; zeros for a row without words)."""
        mask = mask.bool()
        safe_ids = ids.masked_fill(~mask, self.pad_id)  # padding ids are only looked up with weight 0
        gram_ids, gram_mask = self.ngrams(safe_ids, mask)
        weights = self.bag_weights(gram_mask)
        pooled = self.embedding(gram_ids, per_sample_weights=weights.to(self.embedding.weight.dtype))
        sequence = self.embedding.weight[safe_ids] * mask.unsqueeze(-1).to(self.embedding.weight.dtype)
        word_weights = mask.float()
        attention = word_weights / word_weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        return TextFeatures(
            vector=self.vector_proj(pooled), sequence=sequence, mask=mask, attention=attention
        )
