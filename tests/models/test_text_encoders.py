import pytest
import torch

from medmodal.models import available, create

from .helpers import PAD, VOCAB, assert_all_params_get_grad, make_batch

NAMES = available("text_encoder", standalone=True)


def build(name: str):
    return create("text_encoder", name, vocab_size=VOCAB, out_dim=16, pad_id=PAD, embed_dim=16, dropout=0.0)


def text_batch(lengths, text_len=8):
    batch = make_batch(batch_size=len(lengths), text_len=text_len, lengths=lengths)
    return batch["text_ids"], batch["text_mask"]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_attention_over_real_tokens(name):
    encoder = build(name).eval()
    ids, mask = text_batch([8, 5, 1])
    features = encoder(ids, mask)
    assert features.vector.shape == (3, encoder.out_dim)
    assert features.sequence.shape == (3, 8, encoder.seq_dim)
    assert features.attention.shape == (3, 8)
    assert torch.allclose(features.attention.sum(-1), torch.ones(3))
    assert (features.attention[~mask] == 0).all()
    assert (features.sequence[~mask] == 0).all()
    assert torch.equal(features.mask, mask)


@pytest.mark.parametrize("name", NAMES)
def test_all_padding_rows_are_finite_with_zero_attention(name):
    encoder = build(name).train()
    ids, mask = text_batch([6, 0, 0])
    features = encoder(ids, mask)
    for tensor in (features.vector, features.sequence, features.attention):
        assert torch.isfinite(tensor).all()
    assert (features.attention[1:] == 0).all()
    assert (features.sequence[1:] == 0).all()
    assert torch.allclose(features.attention[0].sum(), torch.tensor(1.0))
    # A whole batch without text, too (the gradient must be finite as well).
    features = encoder(*text_batch([0, 0]))
    features.vector.sum().backward()
    assert torch.isfinite(features.vector).all()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_padding_does_not_change_the_encoding(name):
    encoder = build(name).eval()
    ids, mask = text_batch([5, 3], text_len=5)
    longer_ids = torch.cat([ids, torch.full((2, 4), PAD)], dim=1)
    longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], dim=1)
    short, long = encoder(ids, mask), encoder(longer_ids, longer_mask)
    assert torch.allclose(short.vector, long.vector, atol=1e-5)
    assert torch.allclose(short.attention, long.attention[:, :5], atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_parameter(name):
    encoder = build(name).train()
    ids, mask = text_batch([8, 4, 2])
    features = encoder(ids, mask)
    (features.vector.square().mean() + features.sequence.square().mean()).backward()
    assert_all_params_get_grad(encoder)
    embedding_grad = encoder.embedding.weight.grad
    assert embedding_grad[ids[mask]].abs().sum() > 0
    assert (embedding_grad[PAD] == 0).all()  # padding embedding stays fixed


def test_bilstm_reads_both_directions():
    """The first token's state depends on the last token (backward direction) and vice versa."""
    encoder = build("bilstm_attention").eval()
    ids, mask = text_batch([6], text_len=6)
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1 - 3) % (VOCAB - 3) + 3
    a, b = encoder(ids, mask).sequence, encoder(changed, mask).sequence
    assert not torch.allclose(a[0, 0], b[0, 0])


def test_transformer_rejects_text_longer_than_max_len():
    encoder = create(
        "text_encoder", "transformer", vocab_size=VOCAB, out_dim=16, pad_id=PAD, embed_dim=16, max_len=4
    )
    with pytest.raises(ValueError, match="longer than max_len=4"):
        encoder(*text_batch([6], text_len=6))


def test_ngram_bag_reads_word_order_through_bigrams_only():
    """Swapping two words keeps the unigram bag but changes the bigrams."""
    ids = torch.tensor([[5, 6, 7, PAD]])
    swapped = torch.tensor([[6, 5, 7, PAD]])
    mask = ids != PAD
    with_pairs = create(
        "text_encoder", "ngram_bag", vocab_size=VOCAB, out_dim=8, pad_id=PAD, embed_dim=8
    ).eval()
    unigrams = create(
        "text_encoder", "ngram_bag", vocab_size=VOCAB, out_dim=8, pad_id=PAD, embed_dim=8, num_buckets=0
    ).eval()
    assert not torch.allclose(with_pairs(ids, mask).vector, with_pairs(swapped, mask).vector)
    assert torch.allclose(unigrams(ids, mask).vector, unigrams(swapped, mask).vector, atol=1e-6)


def test_ngram_bigram_ids_skip_padding_and_stay_in_their_slots():
    from medmodal.models.text_encoders.ngram_bag import bigram_ids

    ids = torch.tensor([[5, 6, 7, PAD], [9, PAD, PAD, PAD]])
    pair_ids, pair_mask = bigram_ids(ids, ids != PAD, vocab_size=VOCAB, num_buckets=11)
    assert pair_mask.tolist() == [[True, True, False], [False, False, False]]
    assert ((pair_ids >= VOCAB) & (pair_ids < VOCAB + 11)).all()


def test_ngram_bag_token_dropout_only_in_training_and_never_empties_a_bag():
    encoder = create(
        "text_encoder", "ngram_bag", vocab_size=VOCAB, out_dim=8, pad_id=PAD, embed_dim=8, token_dropout=0.9
    )
    mask = torch.tensor([[True, True, True, False]])
    gram_mask = encoder.ngrams(torch.tensor([[5, 6, 7, PAD]]), mask)[1]
    encoder.train()
    torch.manual_seed(0)
    for _ in range(20):
        weights = encoder.bag_weights(gram_mask)
        assert torch.allclose(weights.sum(), torch.tensor(1.0))
    encoder.eval()
    assert torch.allclose(encoder.bag_weights(gram_mask), gram_mask.float() / gram_mask.sum())
