import pytest
import torch

from medmodal.models import available, create

from .helpers import assert_all_params_get_grad

# Input size per encoder: small_cnn has stride 16, the MONAI backbones stride 32.
STRIDE = {"small_cnn": 16}
SIZE = 64


def build(name: str, **kwargs):
    if name == "small_cnn":
        kwargs.setdefault("widths", (8, 16, 16, 32))
        kwargs.setdefault("stem_width", 8)
    return create("image_encoder", name, in_channels=1, out_dim=24, **kwargs)


@pytest.mark.parametrize("name", available("image_encoder"))
def test_image_encoder_shapes_and_gradients(name):
    encoder = build(name).train()
    image = torch.randn(2, 1, SIZE, SIZE)
    features = encoder(image)
    side = SIZE // STRIDE.get(name, 32)
    assert encoder.out_dim == 24
    assert features.vector.shape == (2, 24)
    assert features.grid.shape == (2, encoder.grid_dim, side, side)
    assert torch.isfinite(features.vector).all() and torch.isfinite(features.grid).all()

    (features.vector.square().mean() + features.grid.square().mean()).backward()
    assert_all_params_get_grad(encoder)
    first_conv = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_grid_dim_projects_the_grid(name):
    encoder = build(name, grid_dim=12)
    assert encoder.grid_dim == 12
    assert encoder(torch.randn(2, 1, SIZE, SIZE)).grid.shape[1] == 12


def test_small_cnn_grid_follows_the_image_layout():
    """A bright patch in one corner changes the grid cells there more than those far away."""
    encoder = build("small_cnn").eval()
    blank = torch.zeros(1, 1, SIZE, SIZE)
    patch = blank.clone()
    patch[..., :8, :8] = 5.0
    change = (encoder(patch).grid - encoder(blank).grid).abs().sum(dim=1)[0]  # [h, w]
    assert change[0, 0] > change[-1, -1]


def test_monai_backbones_keep_the_monai_network_names():
    encoder = build("resnet18")
    assert "body.net.conv1.weight" in encoder.state_dict()
    assert not any(key.startswith("body.net.fc") for key in encoder.state_dict())
