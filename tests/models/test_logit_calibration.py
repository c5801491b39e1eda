"""The model's calibration is part of its weights (persistent buffers); older weights without it load."""

from __future__ import annotations

import pytest
import torch

from medmodal.models.calibration import LogitCalibration, fill_missing_calibration


def test_identity_until_set_then_affine():
    calibration = LogitCalibration(3)
    logits = torch.randn(4, 3)
    assert calibration.is_identity and torch.equal(calibration(logits), logits)
    calibration.set([0.5, 1.0, 2.0], [0.0, -1.0, 1.0])
    assert not calibration.is_identity
    expected = logits * torch.tensor([0.5, 1.0, 2.0]) + torch.tensor([0.0, -1.0, 1.0])
    assert torch.allclose(calibration(logits), expected)


def test_state_dict_carries_it():
    calibration = LogitCalibration(2)
    calibration.set([0.5, 3.0], [1.0, -2.0])
    again = LogitCalibration(2)
    again.load_state_dict(calibration.state_dict())
    assert torch.equal(again.scale, torch.tensor([0.5, 3.0])) and torch.equal(
        again.bias, torch.tensor([1.0, -2.0])
    )


@pytest.mark.parametrize(
    ("scale", "bias", "message"),
    [
        ([1.0, -1.0], [0.0, 0.0], "positive"),
        ([1.0], [0.0], "2 scales"),
        ([1.0, 1.0], [0.0, 0.0, 0.0], "2 scales"),
    ],
)
def test_set_refuses_what_would_reverse_or_misfit(scale, bias, message):
    with pytest.raises(ValueError, match=message):
        LogitCalibration(2).set(scale, bias)


def test_older_state_dict_is_filled_with_the_identity():
    model = torch.nn.ModuleDict({"head": torch.nn.Linear(2, 3), "calibration": LogitCalibration(3)})
    model["calibration"].set([2.0] * 3, [1.0] * 3)
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("calibration.")}
    filled = fill_missing_calibration(dict(old), model)
    model.load_state_dict(filled, strict=True)
    assert model["calibration"].is_identity


def test_fill_keeps_stored_calibration():
    model = torch.nn.ModuleDict({"calibration": LogitCalibration(2)})
    stored = {"calibration.scale": torch.tensor([3.0, 3.0]), "calibration.bias": torch.tensor([0.5, 0.5])}
    assert fill_missing_calibration(dict(stored), model) == stored


def test_multimodal_model_saves_calibration_with_its_weights():
    import medmodal

    model = medmodal.create_model("tiny", labels=["a", "b"])
    model.set_calibration(torch.tensor([0.5, 2.0]), torch.tensor([1.0, -1.0]))
    state = model.state_dict()
    assert torch.equal(state["calibration.scale"], torch.tensor([0.5, 2.0]))
    fresh = medmodal.create_model("tiny", labels=["a", "b"])
    fresh.load_state_dict(state)
    assert torch.equal(fresh.calibration_scale, torch.tensor([0.5, 2.0]))
