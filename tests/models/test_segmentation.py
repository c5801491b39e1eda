"""The text-guided U-Net: FiLM starts as the identity, shapes and gradient flow, the text changes the prediction."""

from __future__ import annotations

import pytest
import torch

from medmodal.models import registry
from medmodal.models.segmentation import FiLM, TextGuidedUNet

FEATURES = (4, 4, 8, 8, 16, 4)


def test_film_starts_as_identity_and_modulates_per_channel():
    film = FiLM(condition_dim=3, channels=2)
    x = torch.randn(2, 2, 4, 4)
    condition = torch.randn(2, 3)
    assert torch.equal(film(x, condition), x)
    with torch.no_grad():
        film.project.bias.copy_(torch.tensor([1.0, 0.0, 0.5, -1.0]))  # gamma = (1, 0), beta = (0.5, -1)
    out = film(x, condition)
    assert torch.allclose(out[:, 0], 2 * x[:, 0] + 0.5)
    assert torch.allclose(out[:, 1], x[:, 1] - 1.0)


def _text_encoder():
    return registry.create("text_encoder", "bilstm_attention", vocab_size=20, out_dim=8, pad_id=0)


def test_unet_shapes_and_gradients():
    torch.manual_seed(0)
    image = torch.randn(2, 1, 32, 32)
    ids, mask = torch.randint(5, 20, (2, 5)), torch.ones(2, 5, dtype=torch.bool)
    plain = TextGuidedUNet(7, FEATURES)
    assert plain(image).shape == (2, 7, 32, 32)
    guided = TextGuidedUNet(7, FEATURES, _text_encoder())
    with torch.no_grad():  # same U-Net weights: at initialisation the FiLM layers are the identity
        guided.unet.load_state_dict(plain.unet.state_dict())
    plain.eval(), guided.eval()
    assert torch.allclose(guided(image, ids, mask), plain(image))
    guided.train()
    for film in guided.films:  # move FiLM off zero so the text encoder receives a gradient
        torch.nn.init.normal_(film.project.weight, std=0.1)
    guided(image, ids, mask).logsumexp(dim=1).mean().backward()
    for part in (guided.unet, guided.text_encoder, guided.films):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    with pytest.raises(ValueError, match="text-conditioned"):
        guided(image)


def test_text_changes_the_guided_prediction():
    torch.manual_seed(0)
    guided = TextGuidedUNet(3, FEATURES, _text_encoder()).eval()
    for film in guided.films:
        torch.nn.init.normal_(film.project.weight, std=0.5)
    image, mask = torch.randn(1, 1, 32, 32), torch.ones(1, 4, dtype=torch.bool)
    a = guided(image, torch.tensor([[5, 6, 7, 8]]), mask)
    b = guided(image, torch.tensor([[9, 10, 11, 12]]), mask)
    assert not torch.allclose(a, b)
