"""Contrastive losses (InfoNCE, GLoRIA local) on known cases, and the contrastive model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medmodal.config import Config, apply_overrides
from medmodal.models.contrastive import (
    MAX_LOGIT_SCALE,
    ContrastiveLoss,
    ContrastiveOutput,
    create_contrastive_model,
    info_nce_loss,
    local_alignment_loss,
    local_similarity,
)


def test_info_nce_of_identical_embeddings_is_log_batch_size():
    same = F.normalize(torch.ones(6, 4), dim=-1)
    assert info_nce_loss(same, same, 10.0).item() == pytest.approx(math.log(6), abs=1e-6)


def test_info_nce_of_aligned_orthogonal_pairs_is_near_zero_at_low_temperature():
    eye = torch.eye(5)
    assert info_nce_loss(eye, eye, 100.0).item() < 1e-6  # off-diagonal logits are 100 below the diagonal
    # At temperature 1 the same pairs keep a known loss: -log(e / (e + 4)).
    assert info_nce_loss(eye, eye, 1.0).item() == pytest.approx(-math.log(math.e / (math.e + 4)), abs=1e-6)


def test_info_nce_is_symmetric_and_penalises_mismatched_pairs():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(8, 16), dim=-1), F.normalize(torch.randn(8, 16), dim=-1)
    assert info_nce_loss(a, b, 5.0).item() == pytest.approx(info_nce_loss(b, a, 5.0).item(), abs=1e-6)
    shuffled = torch.eye(4)[[1, 0, 3, 2]]
    assert info_nce_loss(torch.eye(4), shuffled, 20.0).item() > 10  # every positive scores below a negative


def _one_hot_regions_and_words():
    """Image i has one bright region along axis i; report i's words point along axis i."""
    regions = torch.zeros(3, 4, 3)
    words = torch.zeros(3, 2, 3)
    for i in range(3):
        regions[i, :, :] = F.normalize(torch.full((4, 3), 0.05), dim=-1)
        regions[i, 0] = torch.eye(3)[i]
        words[i, :] = torch.eye(3)[i]
    return regions, words, torch.ones(3, 2, dtype=torch.bool)


def test_local_similarity_prefers_the_matching_image():
    regions, words, mask = _one_hot_regions_and_words()
    scores = local_similarity(regions, words, mask, attention_temperature=4.0, word_temperature=5.0)
    assert scores.shape == (3, 3)
    assert torch.equal(scores.argmax(dim=0), torch.arange(3))  # for each report, its own image wins
    aligned = local_alignment_loss(regions, words, mask)
    mismatched = local_alignment_loss(regions, words[[1, 2, 0]], mask)
    assert aligned.item() < mismatched.item()


def test_local_similarity_ignores_padding_words():
    regions, words, mask = _one_hot_regions_and_words()
    padded = torch.cat([words, F.normalize(torch.randn(3, 1, 3), dim=-1)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(3, 1, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(
        local_similarity(regions, padded, padded_mask, 4.0, 5.0),
        local_similarity(regions, words, mask, 4.0, 5.0),
    )
    empty = local_similarity(regions, words, torch.zeros(3, 2, dtype=torch.bool), 4.0, 5.0)
    assert torch.isfinite(empty).all() and (empty == 0).all()


def _tiny_model(**pretrain):
    overrides = {
        "model.embed_dim": 16,
        "pretrain.projection_dim": 8,
        **{f"pretrain.{k}": v for k, v in pretrain.items()},
    }
    cfg = apply_overrides(Config(), overrides)
    return create_contrastive_model(cfg, vocab_size=30, pad_id=0)


def _batch(b=6, length=7):
    torch.manual_seed(0)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 4:] = False
    return {
        "image": torch.randn(b, 1, 32, 32),
        "text_ids": torch.randint(5, 30, (b, length)) * mask,
        "text_mask": mask,
    }


def test_model_outputs_unit_norm_embeddings_and_local_features():
    model = _tiny_model(local_loss_weight=1.0)
    out = model(_batch())
    assert out.image_embeddings.shape == out.text_embeddings.shape == (6, 8)
    torch.testing.assert_close(out.image_embeddings.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(out.text_embeddings.norm(dim=-1), torch.ones(6))
    assert out.regions.shape[0] == 6 and out.regions.shape[2] == 8
    assert out.words.shape == (6, 7, 8) and out.word_mask[0, 4:].eq(False).all()
    assert out.logit_scale.item() == pytest.approx(10.0, rel=1e-5)  # default temperature 0.1


def test_temperature_is_clamped_and_can_be_frozen():
    model = _tiny_model()
    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == MAX_LOGIT_SCALE
    frozen = _tiny_model(learn_temperature=False)
    assert "log_logit_scale" not in dict(frozen.named_parameters())


def test_loss_uses_only_complete_pairs_and_needs_two():
    emb = torch.eye(4)
    out = ContrastiveOutput(
        image_embeddings=emb, text_embeddings=emb[[0, 1, 3, 2]], logit_scale=torch.tensor(50.0)
    )
    total, _ = ContrastiveLoss()(out, torch.tensor([True, True, False, False]))
    assert total.item() < 1e-6  # rows 2 and 3 (swapped) are left out
    single, parts = ContrastiveLoss()(out, torch.tensor([True, False, False, False]))
    assert single.item() == 0.0 and set(parts) == {"global"}


def test_training_steps_reduce_the_loss_with_the_local_term():
    torch.manual_seed(0)
    model = _tiny_model(local_loss_weight=1.0)
    loss_fn = ContrastiveLoss(local_weight=1.0)
    batch = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    pairs = torch.ones(6, dtype=torch.bool)
    first = None
    for _ in range(25):
        total, parts = loss_fn(model(batch), pairs)
        first = first if first is not None else total.item()
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert "local" in parts
    assert total.item() < 0.5 * first
