"""Wide (linear) pathways of the wide & deep classifier (medmodal/models/wide.py) and the
``fused_logits: with_unimodal`` sum of logits."""

from __future__ import annotations

import math

import pytest
import torch

from medmodal.config import Config, apply_overrides
from medmodal.errors import ConfigError
from medmodal.models.multimodal import create_model
from medmodal.models.wide import WideNgrams, WidePixels, distinct

from .helpers import BOS, EOS, NUM_LABELS, PAD, VOCAB, make_batch


def _model(**overrides):
    config = apply_overrides(
        Config(),
        {
            "model.embed_dim": 16,
            "model.heads.localization": False,
            "model.heads.generation": False,
            **overrides,
        },
    )
    return create_model(
        config.model, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS
    )


def test_pathways_start_at_zero_so_a_model_starts_as_its_deep_part():
    pixels, ngrams = WidePixels(NUM_LABELS, side=4), WideNgrams(VOCAB, NUM_LABELS, PAD, num_buckets=7)
    batch = make_batch()
    assert torch.equal(pixels(batch["image"]), torch.zeros(4, NUM_LABELS))
    assert torch.equal(ngrams(batch["text_ids"], batch["text_mask"]), torch.zeros(4, NUM_LABELS))


def test_ngram_bag_is_binary_l2_normalised_and_ignores_padding():
    wide = WideNgrams(VOCAB, NUM_LABELS, PAD, num_buckets=0)
    with torch.no_grad():
        wide.weights.weight.copy_(torch.arange(VOCAB, dtype=torch.float32)[:, None].expand(VOCAB, NUM_LABELS))
    ids = torch.tensor([[5, 7, 5, 9, PAD, PAD], [4, PAD, PAD, PAD, PAD, PAD]])
    mask = ids != PAD
    out = wide(ids, mask)
    # row 0: distinct {5, 7, 9}, each 1 / sqrt(3); the repeated 5 counts once, padding never
    assert out[0, 0].item() == pytest.approx((5 + 7 + 9) / math.sqrt(3))
    assert out[1, 0].item() == pytest.approx(4.0)
    assert torch.equal(distinct(ids, mask)[0], torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0]))


def test_bigrams_are_features_of_their_own():
    wide = WideNgrams(VOCAB, NUM_LABELS, PAD, num_buckets=11)
    with torch.no_grad():
        wide.weights.weight[VOCAB:].fill_(1.0)  # only the bigram rows are non-zero
    ids = torch.tensor([[5, 7, 9], [5, PAD, PAD]])
    out = wide(ids, ids != PAD)
    assert out[0, 0].item() == pytest.approx(2 / math.sqrt(5))  # 3 words + 2 pairs, the pairs weigh
    assert out[1, 0].item() == 0.0  # a single word has no pair


@pytest.mark.parametrize("modalities", ["image", "text", "both"])
def test_wide_logits_are_added_to_the_classification_logits(modalities):
    model = _model(
        **{"model.modalities": modalities, "model.wide.pixels": 4, "model.wide.ngrams": True}
    ).eval()
    batch = make_batch()
    before = model(batch).logits
    for part in (model.wide_image, model.wide_text):
        if part is not None:
            with torch.no_grad():
                for p in part.parameters():
                    p.fill_(0.1)
    after = model(batch)
    expected = before.clone()
    if model.wide_image is not None:
        expected += model.wide_image(batch["image"])
    if model.wide_text is not None:
        expected += model.wide_text(batch["text_ids"], batch["text_mask"])
    assert not torch.allclose(after.logits, before)
    assert torch.allclose(after.logits, expected, atol=1e-5)


def test_a_row_without_its_image_gets_no_wide_image_logits():
    model = _model(**{"model.modalities": "image", "model.wide.pixels": 4}).eval()
    batch = make_batch()
    batch["has_image"][1] = False
    reference = model(batch).logits
    with torch.no_grad():
        model.wide_image.net[-1].weight.fill_(1.0)
    changed = (model(batch).logits - reference).abs().sum(dim=1)
    assert changed[1] == 0 and (changed[[0, 2, 3]] > 0).all()


def test_with_unimodal_adds_both_auxiliary_logits_to_the_head():
    model = _model(**{"model.fused_logits": "with_unimodal", "model.wide.pixels": 4}).eval()
    with torch.no_grad():
        model.wide_image.net[-1].weight.fill_(0.1)
    batch = make_batch()
    out = model(batch)
    head = model.classifier(out.fused)
    assert torch.allclose(out.logits, head + out.image_logits + out.text_logits, atol=1e-5)
    # the image auxiliary logits include the wide pathway
    assert torch.allclose(
        out.image_logits,
        model.image_aux_head(model.encode(batch, False)[0].vector) + model.wide_image(batch["image"]),
        atol=1e-5,
    )


def test_defaults_build_no_wide_pathway_and_keep_the_head_logits():
    model = _model()
    assert model.wide_image is None and model.wide_text is None and model.fused_logits == "head"


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="model.fused_logits"):
        apply_overrides(Config(), {"model.fused_logits": "sum"})
    with pytest.raises(ConfigError, match="model.wide.pixels"):
        apply_overrides(Config(), {"model.wide.pixels": -1})
    with pytest.raises(ConfigError, match="train.weight_averaging"):
        apply_overrides(Config(), {"train.weight_averaging": "swa2"})
