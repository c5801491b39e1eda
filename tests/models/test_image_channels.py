"""model.image_channels: validated, honoured by every image encoder, grayscale batches repeated."""

from __future__ import annotations

import pytest
import torch

import medmodal
from medmodal.config import ConfigError
from medmodal.models import registry


def _batch(channels: int, size: int = 64) -> dict:
    return {
        "image": torch.randn(2, channels, size, size), "has_image": torch.tensor([True, True]),
        "text_ids": torch.zeros(2, 4, dtype=torch.long), "text_mask": torch.ones(2, 4, dtype=torch.bool),
        "has_text": torch.tensor([True, True]),
    }  # fmt: skip


def _first_conv(model) -> torch.nn.Conv2d:
    return next(m for m in model.image_encoder.modules() if isinstance(m, torch.nn.Conv2d))


def test_default_is_one_channel():
    assert medmodal.get_config().model.image_channels == 1
    model = medmodal.create_model("tiny", labels=["a"])
    assert model.image_channels == 1


@pytest.mark.parametrize("value", [0, 5, "rgb"])
def test_bad_values_name_the_field(value):
    with pytest.raises(ConfigError, match="model.image_channels"):
        medmodal.get_config("tiny", {"model.image_channels": value})


@pytest.mark.parametrize("name", registry.available("image_encoder", standalone=True))
def test_every_image_encoder_takes_three_channels(name):
    kwargs = {"image_size": 64} if name == "transchex_image" else {}
    encoder = registry.create("image_encoder", name, in_channels=3, out_dim=16, **kwargs).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 64))
    assert features.vector.shape == (1, 16)


def test_three_channel_model_repeats_a_grayscale_batch():
    model = medmodal.create_model("tiny", labels=["a", "b"], overrides={"model.image_channels": 3}).eval()
    gray = _batch(1)
    one_channel = medmodal.create_model("tiny", labels=["a", "b"])
    assert (
        _first_conv(model).in_channels - _first_conv(one_channel).in_channels == 2
    )  # (+ coordinate channels)
    with torch.no_grad():
        assert model(gray).logits.shape == (2, 2)
        encoded = model.encode_images(gray["image"], gray["has_image"]).vector
        repeated = model.image_encoder(gray["image"].repeat(1, 3, 1, 1)).vector
    assert torch.allclose(encoded, repeated)


def test_other_channel_counts_are_refused():
    model = medmodal.create_model("tiny", labels=["a"], overrides={"model.image_channels": 3}).eval()
    with pytest.raises(ValueError, match="3 channels"):
        model(_batch(2))
