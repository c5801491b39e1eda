import pytest
import torch

from medmodal.models import ImageFeatures, TextFeatures, available, create

from .helpers import NUM_LABELS, assert_all_params_get_grad

NAMES = available("fusion", standalone=True)
DIMS = {"image_dim": 12, "text_dim": 10, "grid_dim": 6, "seq_dim": 8, "out_dim": 16, "num_labels": NUM_LABELS}


def build(name: str, **kwargs):
    return create("fusion", name, **DIMS, **kwargs)


def features(batch_size=3, lengths=(5, 3, 1), text_len=5, requires_grad=False):
    mask = torch.arange(text_len)[None, :] < torch.tensor(lengths)[:, None]
    image = ImageFeatures(
        vector=torch.randn(batch_size, DIMS["image_dim"], requires_grad=requires_grad),
        grid=torch.randn(batch_size, DIMS["grid_dim"], 2, 3, requires_grad=requires_grad),
    )
    sequence = torch.randn(batch_size, text_len, DIMS["seq_dim"]) * mask[..., None]
    text = TextFeatures(
        vector=torch.randn(batch_size, DIMS["text_dim"], requires_grad=requires_grad),
        sequence=sequence.requires_grad_(requires_grad),
        mask=mask,
    )
    return image, text


@pytest.mark.parametrize("name", NAMES)
def test_fusion_shapes_and_gradients(name):
    fusion = build(name).train()
    image, text = features(requires_grad=True)
    output = fusion(image, text)
    assert fusion.out_dim == 16
    assert output.vector.shape == (3, 16)
    assert torch.isfinite(output.vector).all()
    loss = output.vector.square().mean() + (output.logits.square().mean() if output.logits is not None else 0)
    loss.backward()
    assert_all_params_get_grad(fusion)
    # Both modalities influence the joint representation.
    assert image.vector.grad.abs().sum() > 0
    assert text.vector.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_fusion_is_finite_without_text_tokens(name):
    fusion = build(name).eval()
    image, text = features(lengths=(0, 0, 2))
    output = fusion(image, text)
    assert torch.isfinite(output.vector).all()
    for value in output.extras.values():
        assert torch.isfinite(value).all()


def test_late_fusion_combines_unimodal_logits_with_softmax_weights():
    fusion = build("late").eval()
    image, text = features()
    output = fusion(image, text)
    extras = output.extras
    assert output.logits.shape == (3, NUM_LABELS)
    assert torch.allclose(extras["modality_weights"], torch.full((2, NUM_LABELS), 0.5))
    with torch.no_grad():
        fusion.modality_scores[0, 0] = 10.0  # class 0: trust the image
    output = fusion(image, text)
    weights = output.extras["modality_weights"]
    assert torch.allclose(weights.sum(0), torch.ones(NUM_LABELS))
    assert torch.allclose(output.logits[:, 0], extras["image_logits"][:, 0], atol=1e-3)
    expected = weights[0] * output.extras["image_logits"] + weights[1] * output.extras["text_logits"]
    assert torch.allclose(output.logits, expected)


def test_gated_unit_follows_its_gate():
    fusion = build("gated", dropout=0.0).eval()
    image, text = features()
    output = fusion(image, text)
    gate = output.extras["gate"]
    assert gate.shape == (3, 16) and ((gate > 0) & (gate < 1)).all()
    h_image = torch.tanh(fusion.image_proj(image.vector))
    h_text = torch.tanh(fusion.text_proj(text.vector))
    assert torch.allclose(output.vector, gate * h_image + (1 - gate) * h_text, atol=1e-6)
    with torch.no_grad():
        fusion.gate.bias.fill_(50.0)  # gate fully open to the image
    assert torch.allclose(fusion(image, text).vector, h_image, atol=1e-5)


def test_bilinear_keeps_unimodal_terms():
    """With the appended 1, a zero text vector does not wipe out the image's contribution."""
    fusion = build("bilinear", rank=3, dropout=0.0).eval()
    assert fusion.image_factor.shape == (3, DIMS["image_dim"] + 1, 16)
    image, text = features()
    text.vector = torch.zeros_like(text.vector)
    other = ImageFeatures(vector=torch.randn_like(image.vector), grid=image.grid)
    assert not torch.allclose(fusion(image, text).vector, fusion(other, text).vector)


def test_bilinear_matches_the_full_tensor_fusion_it_factorises():
    fusion = build("bilinear", rank=2, dropout=0.0).eval()
    image, text = features()
    zi = torch.cat([image.vector, torch.ones(3, 1)], 1)
    zt = torch.cat([text.vector, torch.ones(3, 1)], 1)
    # Full weight tensor W[i, t, o] = sum_r w_r A_r[i, o] B_r[t, o] applied to the outer product.
    weight = torch.einsum("r,rio,rto->ito", fusion.rank_weights[0], fusion.image_factor, fusion.text_factor)
    expected = torch.einsum("bi,bt,ito->bo", zi, zt, weight) + fusion.bias
    assert torch.allclose(fusion(image, text).vector, expected, atol=1e-4)


def test_cross_attention_maps_respect_the_text_mask():
    fusion = build("cross_attention", dim=8, num_heads=2).eval()
    image, text = features(lengths=(5, 3, 0))
    extras = fusion(image, text).extras
    t2i, i2t = extras["text_to_image_attention"], extras["image_to_text_attention"]
    mask = text.mask
    assert t2i.shape == (3, 5, 6) and i2t.shape == (3, 6, 5)
    assert torch.allclose(t2i[mask].sum(-1), torch.ones(int(mask.sum())), atol=1e-5)
    assert (t2i[~mask] == 0).all()
    assert torch.allclose(i2t[:2].sum(-1), torch.ones(2, 6), atol=1e-5)  # regions over real tokens
    assert (i2t[:2].transpose(1, 2)[~mask[:2]] == 0).all()  # no weight on padding
    assert (i2t[2] == 0).all()  # no tokens at all


def test_cross_attention_ignores_padding_token_content():
    fusion = build("cross_attention", dim=8, num_heads=2).eval()
    image, text = features(lengths=(3, 3, 3))
    noisy = TextFeatures(
        vector=text.vector, sequence=text.sequence + 5 * (~text.mask)[..., None], mask=text.mask
    )
    assert torch.allclose(fusion(image, text).vector, fusion(image, noisy).vector, atol=1e-5)


def test_stacked_fusion_adds_unimodal_logits_and_starts_without_a_joint_term():
    fusion = build("stacked", dropout=0.0).eval()
    image, text = features()
    out = fusion(image, text)
    extras = out.extras
    assert torch.allclose(extras["joint_logits"], torch.zeros_like(out.logits))
    assert torch.allclose(out.logits, extras["image_logits"] + extras["text_logits"])
    # Once the joint MLP has weights, it is added on top of the unimodal sum.
    torch.nn.init.normal_(fusion.joint[-1][-1].weight)
    out = fusion(image, text)
    assert not torch.allclose(out.extras["joint_logits"], torch.zeros_like(out.logits))
    total = out.extras["image_logits"] + out.extras["text_logits"] + out.extras["joint_logits"]
    assert torch.allclose(out.logits, total)


def test_stacked_fusion_without_joint_term_is_a_pure_sum():
    fusion = build("stacked", hidden_dim=0, dropout=0.0).eval()
    image, text = features()
    out = fusion(image, text)
    assert "joint_logits" not in out.extras
    assert torch.allclose(out.logits, out.extras["image_logits"] + out.extras["text_logits"])
    with pytest.raises(ValueError, match="hidden_dim"):
        build("stacked", hidden_dim=-1)
