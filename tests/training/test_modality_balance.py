"""OGM gradient modulation: coefficients on known cases, the gradient hook, a tiny training run."""

from __future__ import annotations

import math

import pytest
import torch

from medmodal.models.types import ModelOutput
from medmodal.training.modality_balance import modality_scores, ogm_coefficients, scale_gradients


def test_coefficients_slow_only_the_dominant_modality():
    k_image, k_text = ogm_coefficients(0.8, 0.4, alpha=0.5)  # image twice as good
    assert k_image == pytest.approx(1 - math.tanh(0.5)) and k_text == 1.0
    k_image, k_text = ogm_coefficients(0.3, 0.9, alpha=1.0)  # text three times as good
    assert k_image == 1.0 and k_text == pytest.approx(1 - math.tanh(2.0))
    assert ogm_coefficients(0.6, 0.6, alpha=0.5) == (1.0, 1.0)
    assert ogm_coefficients(float("nan"), 0.6, alpha=0.5) == (1.0, 1.0)
    assert ogm_coefficients(-1.0, 0.6, alpha=0.5) == (1.0, 1.0)  # "undefined" marker after a DDP mean


def test_scores_are_the_probability_of_the_true_labels_over_seen_samples():
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    image_logits = torch.tensor([[10.0, -10.0], [0.0, 0.0], [-10.0, -10.0]])  # sample 1 hidden below
    text_logits = torch.zeros(3, 2)  # p = 0.5 everywhere
    out = ModelOutput(logits=torch.zeros(3, 2), image_logits=image_logits, text_logits=text_logits,
                      image_present=torch.tensor([True, False, True]))  # fmt: skip
    batch = {
        "labels": labels,
        "has_image": torch.ones(3, dtype=torch.bool),
        "has_text": torch.ones(3, dtype=torch.bool),
    }
    s_image, s_text = modality_scores(out, batch).tolist()
    # seen image samples 0 and 2: positives (0, a), (2, a), (2, b) get p ~1, ~0, ~0 -> mean ~1/3;
    # the one negative (0, b) gets 1 - p ~1 -> balanced score ~(1/3 + 1) / 2
    assert s_image == pytest.approx((1 / 3 + 1) / 2, abs=1e-4)
    assert s_text == pytest.approx(0.5)
    # a batch without positives: the negatives' mean alone
    batch_neg = {**batch, "labels": torch.zeros(3, 2)}
    assert modality_scores(out, batch_neg)[0].item() == pytest.approx(0.75, abs=1e-4)  # (0 + 1 + 1 + 1) / 4
    batch["has_text"] = torch.zeros(3, dtype=torch.bool)
    assert math.isnan(modality_scores(out, batch)[1])


def test_scale_gradients_and_the_module_hook():
    from medmodal.config import Config, apply_overrides
    from medmodal.training.module import MultimodalModule

    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(1, 3)).sum().backward()
    before = layer.weight.grad.clone()
    scale_gradients(layer, 0.25)
    assert torch.allclose(layer.weight.grad, 0.25 * before)

    config = apply_overrides(Config(), {"model.embed_dim": 16, "train.modality_balance": "ogm",
                                        "model.heads.generation": False})  # fmt: skip
    module = MultimodalModule(config.model_dump(), vocab_size=20, num_labels=3, pad_id=0, bos_id=2, eos_id=3)
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    module._ogm = (0.5, 1.0)
    module.on_after_backward()
    assert all(torch.all(p.grad == 0.5) for p in module.model.image_encoder.parameters())
    assert all(torch.all(p.grad == 1.0) for p in module.model.text_encoder.parameters())
    assert all(torch.all(p.grad == 1.0) for p in module.model.fusion.parameters())
    assert module._ogm == (1.0, 1.0)  # reset: a step without scores is not modulated


def test_ogm_needs_two_modalities():
    from medmodal.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="modality_balance"):
        config_from_dict({"model": {"modalities": "image"}, "train": {"modality_balance": "ogm"}})


@pytest.mark.slow
def test_tiny_training_with_ogm_logs_its_coefficients(tiny_data, tmp_path):
    from conftest import tiny_config

    from medmodal.training.trainer import train

    out = tmp_path / "ogm"
    train(tiny_data, tiny_config(**{"train.modality_balance": "ogm", "train.epochs": 1, "train.log_every_n_steps": 1,
                                    "model.heads.generation": False}), out)  # fmt: skip
    csv_text = (out / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/ogm_k_image" in csv_text and "train/ogm_k_text" in csv_text
    header, *rows = csv_text.strip().splitlines()
    columns = header.split(",")
    values = [
        float(row.split(",")[columns.index(name)])
        for row in rows
        for name in ("train/ogm_k_image", "train/ogm_k_text")
        if row.split(",")[columns.index(name)]
    ]
    assert values and all(0.0 < v <= 1.0 for v in values)
