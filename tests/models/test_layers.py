import torch

from medmodal.models.layers import (
    AdditiveAttention,
    first_position_if_empty,
    masked_mean,
    masked_softmax,
    mlp,
)


def test_masked_softmax_is_zero_on_masked_entries_and_on_empty_rows():
    scores = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    weights = masked_softmax(scores, mask)
    assert torch.allclose(weights[:2].sum(-1), torch.ones(2))
    assert (weights[~mask] == 0).all()
    assert (weights[2] == 0).all()
    assert torch.allclose(weights[0, :2], torch.softmax(scores[0, :2], -1))


def test_masked_mean_ignores_padding_and_gives_zero_for_empty_rows():
    values = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    mean = masked_mean(values, mask)
    assert torch.allclose(mean[0], values[0, :2].mean(0))
    assert (mean[1] == 0).all()


def test_first_position_if_empty_only_touches_empty_rows():
    mask = torch.tensor([[0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    fixed = first_position_if_empty(mask)
    assert fixed.tolist() == [[False, True, True], [True, False, False]]
    assert mask[1].sum() == 0  # input untouched


def test_additive_attention_with_query_depends_on_the_query():
    attention = AdditiveAttention(key_dim=6, attn_dim=8, query_dim=4)
    keys = torch.randn(2, 5, 6)
    context_a, weights_a = attention(keys, query=torch.randn(2, 4))
    _, weights_b = attention(keys, query=torch.randn(2, 4))
    assert context_a.shape == (2, 6) and weights_a.shape == (2, 5)
    assert torch.allclose(weights_a.sum(-1), torch.ones(2))
    assert not torch.allclose(weights_a, weights_b)
    assert torch.allclose(context_a, torch.einsum("bn,bnd->bd", weights_a, keys), atol=1e-6)


def test_mlp_layer_count():
    net = mlp(4, 8, 2, layers=3)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == 3
    assert net(torch.randn(5, 4)).shape == (5, 2)
