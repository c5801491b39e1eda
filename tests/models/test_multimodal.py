import pytest
import torch

from medmodal.config import ModelConfig
from medmodal.models import ModelOutput, available, create_model

from .helpers import BOS, EOS, NUM_LABELS, PAD, VOCAB, make_batch

TINY_CNN = {"name": "small_cnn", "kwargs": {"widths": [8, 16, 16, 32], "stem_width": 8}}
TINY_PARTS = {
    "image_encoder": TINY_CNN,
    "text_encoder": {"name": "bilstm_attention", "kwargs": {"embed_dim": 16}},
    "decoder": {"name": "lstm", "kwargs": {"attn_dim": 16}},
    "fusion": {"name": "gated"},
}


def model_config(**overrides) -> ModelConfig:
    fields = {"embed_dim": 32, **TINY_PARTS, **overrides}
    return ModelConfig(**fields)


def build(**overrides):
    return create_model(
        model_config(**overrides), vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS
    )


def assert_finite(output: ModelOutput) -> None:
    for name in (
        "logits",
        "image_logits",
        "text_logits",
        "boxes",
        "box_heatmaps",
        "caption_logits",
        "word_attention",
    ):
        value = getattr(output, name)
        assert value is None or torch.isfinite(value).all(), name


@pytest.mark.parametrize("fusion", available("fusion", standalone=True))
def test_both_modalities_with_each_fusion(fusion):
    model = build(fusion={"name": fusion})
    batch = make_batch()
    out = model(batch)
    assert model.modalities == "both"
    assert out.logits.shape == (4, NUM_LABELS)
    assert out.image_logits.shape == out.text_logits.shape == (4, NUM_LABELS)
    assert out.boxes.shape == (4, NUM_LABELS, 4)
    assert out.box_heatmaps.shape == (4, NUM_LABELS, 8, 8)  # 32 px at the localization head's stride 4
    assert out.caption_logits.shape == (4, 9, VOCAB)
    assert out.word_attention.shape == (4, 8)
    assert out.fusion is not None and out.fusion.vector.shape == (4, model.fused_dim)
    assert_finite(out)
    if fusion == "late":
        assert out.logits is out.fusion.logits and model.classifier is None
    # Every part learns from the joint loss.
    loss = (
        out.logits.sum() + out.boxes.sum() + out.box_heatmaps.sum() + out.caption_logits.logsumexp(-1).sum()
    )
    loss = loss + out.image_logits.sum() + out.text_logits.sum()
    loss.backward()
    first_conv = model.image_encoder.body[0][0]
    assert first_conv.weight.grad.abs().sum() > 0
    assert model.text_encoder.embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.fusion.parameters())


def test_image_only_model():
    model = build(modalities="image")
    out = model(make_batch())
    assert model.text_encoder is None and model.fusion is None
    assert out.logits.shape == (4, NUM_LABELS) and out.boxes.shape == (4, NUM_LABELS, 4)
    assert out.image_logits is None and out.text_logits is None and out.word_attention is None
    assert out.text_present is None and out.image_present.all()
    assert_finite(out)
    generated = model.eval().generate(make_batch(), max_len=5)
    assert generated.attention.shape[-1] == 4  # the 2 x 2 image grid


def test_text_only_model_has_no_localization_and_decodes_over_tokens():
    model = build(modalities="text")
    batch = make_batch()
    out = model(batch)
    assert model.image_encoder is None and model.fusion is None and model.localizer is None
    assert out.boxes is None and out.box_heatmaps is None and out.image_logits is None
    assert out.logits.shape == (4, NUM_LABELS) and out.caption_logits.shape == (4, 9, VOCAB)
    assert_finite(out)
    generated = model.eval().generate(batch, max_len=5, beam_size=2)
    assert generated.attention.shape[-1] == 8  # the text tokens
    padding = ~batch["text_mask"]
    assert (generated.attention.transpose(1, 2)[padding] == 0).all()


def test_missing_modalities_get_placeholders_and_distinct_predictions():
    model = build().eval()
    batch = make_batch(batch_size=1)
    batch = {key: value * 1 if torch.is_tensor(value) else value for key, value in batch.items()}
    rows = {key: torch.cat([value] * 4) for key, value in batch.items() if torch.is_tensor(value)}
    rows["has_image"] = torch.tensor([True, False, True, False])
    rows["has_text"] = torch.tensor([True, True, False, False])
    out = model(rows)
    assert_finite(out)
    logits = out.logits
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(logits[i], logits[j]), (i, j)
    assert (out.word_attention[2:] == 0).all()  # no text seen, no word attention
    assert torch.allclose(out.word_attention[:2].sum(-1), torch.ones(2))


def test_missing_rows_carry_the_learned_placeholders_which_get_gradients():
    # cross-attention reads the text tokens too, so the placeholder token is used as well.
    model = build(fusion={"name": "cross_attention", "kwargs": {"dim": 16, "num_heads": 2}}).train()
    batch = make_batch()
    batch["has_image"] = torch.tensor([True, False, True, True])
    batch["has_text"] = torch.tensor([True, True, False, True])
    image, text, _, _ = model.encode(batch, modality_dropout=False)
    placeholder_image, placeholder_text = model.image_placeholder, model.text_placeholder
    assert torch.equal(image.vector[1], placeholder_image.vector)
    assert torch.equal(image.grid[1], placeholder_image.grid[:, None, None].expand_as(image.grid[1]))
    assert torch.equal(text.vector[2], placeholder_text.vector)
    assert torch.equal(text.sequence[2, 0], placeholder_text.token) and (text.sequence[2, 1:] == 0).all()
    assert text.mask[2].tolist() == [True] + [False] * 7
    out = model(batch)
    (out.logits.sum() + out.caption_logits.logsumexp(-1).sum()).backward()
    for parameter in (*placeholder_image.parameters(), *placeholder_text.parameters()):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_a_missing_modality_is_not_read():
    """Rows flagged missing do not depend on the (zero / stale) content of that modality."""
    model = build(fusion={"name": "cross_attention", "kwargs": {"dim": 16, "num_heads": 2}}).eval()
    batch = make_batch()
    batch["has_image"] = torch.tensor([True, False, True, True])
    batch["has_text"] = torch.tensor([True, True, False, True])
    changed = dict(batch)
    changed["image"] = batch["image"].clone()
    changed["image"][1] = torch.randn(1, 32, 32)
    changed["text_ids"] = batch["text_ids"].clone()
    changed["text_ids"][2] = torch.where(batch["text_mask"][2], (batch["text_ids"][2] + 1) % VOCAB, PAD)
    a, b = model(batch), model(changed)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert torch.allclose(a.caption_logits, b.caption_logits, atol=1e-5)


def test_only_present_images_are_encoded():
    """Partial batches run the encoder on the present rows only, with the same result (eval mode)."""
    model = build().eval()
    batch = make_batch()
    partial = dict(batch, has_image=torch.tensor([True, False, True, False]))
    full, part = model(batch), model(partial)
    assert torch.allclose(full.logits[[0, 2]], part.logits[[0, 2]], atol=1e-5)
    assert torch.equal(part.image_present, partial["has_image"])


def test_no_study_crashes_even_with_nothing_present():
    model = build()
    batch = make_batch(lengths=[0, 0, 0, 0])
    batch["has_image"] = torch.zeros(4, dtype=torch.bool)
    out = model(batch)
    assert_finite(out)


def test_modality_dropout_only_in_training_and_never_both():
    model = build(modality_dropout=1.0)
    batch = make_batch(batch_size=64, lengths=[8] * 64)
    batch["has_text"][:4] = False  # these must keep their image
    model.train()
    out = model(batch)
    image, text = out.image_present, out.text_present
    assert (image[:4]).all() and not text[:4].any()
    both = batch["has_text"]
    assert (image[both] ^ text[both]).all()  # exactly one hidden per sample that has both
    assert 10 < int((~image).sum()) < 54  # image or text chosen at random
    assert_finite(out)
    model.eval()
    out = model(batch)
    assert out.image_present.all() and torch.equal(out.text_present, batch["has_text"])
    assert torch.allclose(out.logits, model(batch).logits)  # deterministic in eval mode


def test_heads_follow_the_config():
    model = build(heads={"localization": False, "generation": False})
    out = model(make_batch())
    assert out.logits is not None and out.boxes is None and out.caption_logits is None
    assert model.decoder is None
    with pytest.raises(RuntimeError, match="without a report decoder"):
        model.generate(make_batch())


def test_classification_head_cannot_be_switched_off():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="classification"):
        model_config(heads={"classification": False})


@pytest.mark.parametrize(
    ("text_encoder", "decoder"), [("transformer", "transformer"), ("bilstm_attention", "lstm")]
)
def test_generation_through_the_model(text_encoder, decoder):
    kwargs = {"num_heads": 2} if decoder == "transformer" else {}
    model = build(text_encoder={"name": text_encoder}, decoder={"name": decoder, "kwargs": kwargs}).eval()
    batch = make_batch()
    greedy = model.generate(batch, max_len=6, beam_size=1)
    beam = model.generate(batch, max_len=6, beam_size=3)
    for out in (greedy, beam):
        assert out.ids.shape[0] == 4 and out.ids.shape[1] <= 6 and torch.isfinite(out.scores).all()
    assert (greedy.attention is None) == (decoder == "transformer")


def test_part_kwargs_override_widths_but_not_wiring():
    model = build(image_encoder={"name": "small_cnn", "kwargs": {"widths": [8, 16], "out_dim": 24}})
    assert model.image_encoder.out_dim == 24
    assert model.fusion.image_proj.in_features == 24  # the fusion was wired to the encoder's width
    with pytest.raises(ValueError, match=r"kwargs \['in_channels'\] are set by the model factory"):
        build(image_encoder={"name": "small_cnn", "kwargs": {"in_channels": 3}})


def test_describe_lists_parts_and_parameter_counts():
    model = build()
    text = model.describe()
    for expected in ("modalities: both", "small_cnn", "bilstm_attention", "gated", "lstm", "total"):
        assert expected in text
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["image_encoder"] > 0


def test_coordinated_representation_projects_both_modalities_into_one_unit_norm_space():
    joint = build()
    out = joint(make_batch())
    assert out.image_embedding is None and out.text_embedding is None and out.alignment_scale is None

    model = build(representation="coordinated")
    out = model(make_batch())
    assert out.image_embedding.shape == out.text_embedding.shape == (out.logits.shape[0], 32)
    assert torch.allclose(out.image_embedding.norm(dim=-1), torch.ones(out.logits.shape[0]), atol=1e-5)
    assert out.alignment_scale.item() == pytest.approx(1 / 0.07, rel=1e-4)
    # the alignment term reaches both encoders
    (out.image_embedding * out.text_embedding).sum().backward()
    for encoder in (model.image_encoder, model.text_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_coordinated_representation_needs_two_modalities():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="representation"):
        model_config(modalities="image", representation="coordinated")


def test_model_applies_the_calibration_in_eval_mode_only():
    model = build()
    batch = make_batch()
    model.eval()
    with torch.no_grad():
        raw = model(batch).logits
        scale, bias = torch.tensor([2.0, 0.5, 3.0]), torch.tensor([-1.0, 0.0, 1.0])  # NUM_LABELS = 3
        model.set_calibration(scale, bias)
        assert torch.allclose(model(batch).logits, raw * scale + bias, atol=1e-6)
        model.train()
        torch.manual_seed(0)
        train_mode = model(batch).logits
        model.set_calibration(torch.ones_like(scale), torch.zeros_like(bias))
        torch.manual_seed(0)
        assert torch.allclose(model(batch).logits, train_mode)  # training never sees it
    with pytest.raises(ValueError, match="positive"):
        model.set_calibration(-scale, bias)
    with pytest.raises(ValueError, match="scales and biases"):
        model.set_calibration(torch.ones(raw.shape[1] + 1), torch.zeros(raw.shape[1] + 1))
