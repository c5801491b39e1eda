"""Shapley modality contributions and the conflict flag."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from explain.helpers import make_batch, tiny_model
from medmodal.config import Config, apply_overrides
from medmodal.explain.modality import (
    conflicts_for_prediction,
    find_conflicts,
    modality_contributions,
    resolve_view,
    with_modalities,
)


def test_shapley_values_add_up_to_the_prediction(batch):
    model = tiny_model()
    c = modality_contributions(model, batch)
    assert c.full.shape == c.image.shape == c.text.shape == (3, 3)
    assert torch.allclose(c.base + c.image + c.text, c.full, atol=1e-6)
    assert torch.allclose(c.full, torch.sigmoid(model(batch).logits), atol=1e-6)
    assert not torch.allclose(c.image, torch.zeros_like(c.image))


def test_a_missing_modality_contributes_nothing(batch):
    model = tiny_model()
    batch["has_text"] = torch.tensor([True, False, True])
    c = modality_contributions(model, batch)
    assert torch.allclose(c.text[1], torch.zeros(3), atol=1e-7)
    assert c.text[0].abs().sum() > 0


def test_with_modalities_hides_without_touching_the_input(batch):
    hidden = with_modalities(batch, image=False, text=True)
    assert not hidden["has_image"].any() and torch.equal(hidden["has_text"], batch["has_text"])
    assert batch["has_image"].all()


def test_find_conflicts_needs_opposite_sides_and_a_gap():
    labels = ["a", "b", "c", "d"]
    image = [0.9, 0.9, 0.55, 0.2]
    text = [0.1, 0.7, 0.45, 0.95]
    found = find_conflicts(labels, image, text, threshold=0.5, gap=0.5)
    assert [f["label"] for f in found] == ["a", "d"]  # b: same side; c: gap too small
    assert found[0] == {"label": "a", "image_probability": 0.9, "text_probability": 0.1}


def _set_head(head: torch.nn.Module, bias: list[float]) -> None:
    linear = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(bias))


def test_conflict_flag_on_hand_set_disagreeing_unimodal_heads():
    model = tiny_model()
    _set_head(model.image_aux_head, [4.0, 3.0, -3.0])  # image view: finding 0 yes, 1 yes, 2 no
    _set_head(model.text_aux_head, [-4.0, 3.0, -3.0])  # text view:  finding 0 no,  1 yes, 2 no
    trained = SimpleNamespace(model=model, config=Config(), labels=["x", "y", "z"])
    batch = make_batch(batch_size=1)
    result = conflicts_for_prediction(trained, batch, model(batch), threshold=0.5)
    assert result["conflict_view"] == "auxiliary"
    assert [c["label"] for c in result["conflicts"]] == ["x"]
    assert result["conflicts"][0]["image_probability"] > 0.9
    assert result["conflicts"][0]["text_probability"] < 0.1
    # only one modality given: no conflict can be judged
    batch["has_text"] = torch.tensor([False])
    assert conflicts_for_prediction(trained, batch, model(batch), threshold=0.5) == {}


def test_ablation_view_when_the_auxiliary_heads_were_not_trained():
    model = tiny_model()
    assert resolve_view("auto", model, auxiliary_weight=0.3) == "auxiliary"
    assert resolve_view("auto", model, auxiliary_weight=0.0) == "ablation"
    cfg = apply_overrides(Config(), {"train.loss_weights.auxiliary": 0.0, "evaluate.conflict_gap": 0.01})
    trained = SimpleNamespace(model=model, config=cfg, labels=["x", "y", "z"])
    batch = make_batch(batch_size=1)
    result = conflicts_for_prediction(trained, batch, model(batch), threshold=0.5)
    assert result["conflict_view"] == "ablation"
    image_only = torch.sigmoid(model(with_modalities(batch, True, False)).logits[0])
    text_only = torch.sigmoid(model(with_modalities(batch, False, True)).logits[0])
    expected = [
        i
        for i in range(3)
        if (image_only[i] >= 0.5) != (text_only[i] >= 0.5) and abs(image_only[i] - text_only[i]) >= 0.01
    ]
    assert [c["label"] for c in result["conflicts"]] == [["x", "y", "z"][i] for i in expected]
