import pytest
import torch

from medmodal.models import available, create

from .helpers import assert_all_params_get_grad

# Input size per encoder: small_cnn has stride 16, the MONAI backbones stride 32.
STRIDE = {"small_cnn": 16, "coord_cnn": 16}
SIZE = 64


def build(name: str, **kwargs):
    if name in ("small_cnn", "coord_cnn"):
        kwargs.setdefault("widths", (8, 16, 16, 32))
        kwargs.setdefault("stem_width", 8)
    return create("image_encoder", name, in_channels=1, out_dim=24, **kwargs)


@pytest.mark.parametrize("name", available("image_encoder", standalone=True))
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
    assert first_conv.in_channels == (3 if getattr(encoder, "coord_channels", False) else 1)
    assert first_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["small_cnn", "coord_cnn", "resnet18"])
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


def test_flatten_readout_keeps_the_coarse_layout():
    """The flatten read-out's vector is a linear map of the pooled k x k map (C * k * k inputs), and a
    patch in one corner moves the pooled cells there more than those in the opposite corner."""
    encoder = build("small_cnn", readout="flatten", readout_grid=2).eval()
    assert encoder.vector_proj[-1].in_features == 32 * 2 * 2
    blank = torch.zeros(1, 1, SIZE, SIZE)
    patch = blank.clone()
    patch[..., :8, :8] = 5.0
    pooled = lambda x: encoder.pool(encoder.body(x))
    change = (pooled(patch) - pooled(blank)).abs().sum(dim=1)[0]  # [2, 2]
    assert change[0, 0] > change[1, 1]
    assert encoder(patch).vector.shape == (1, 24)


def test_mean_readout_cannot_place_a_feature_but_flatten_can():
    """With a body that is exactly equivariant (one 1x1 conv), a patch moved across the image gives
    the same mean-read-out vector but a different flatten-read-out vector."""
    left = torch.zeros(1, 1, SIZE, SIZE)
    right = torch.zeros(1, 1, SIZE, SIZE)
    left[..., 8:16, 8:16] = 1.0
    right[..., 8:16, 40:48] = 1.0
    for readout, same in (("mean", True), ("flatten", False)):
        encoder = build("small_cnn", readout=readout, readout_grid=4).eval()
        encoder.body = torch.nn.Conv2d(1, 32, 1)
        a, b = encoder(left).vector, encoder(right).vector
        assert torch.allclose(a, b, atol=1e-6) == same


def test_coordinate_channels_tell_positions_apart():
    from medmodal.models.image_encoders.small_cnn import with_coordinate_channels

    image = torch.zeros(2, 1, 4, 5)
    out = with_coordinate_channels(image)
    assert out.shape == (2, 3, 4, 5)
    assert torch.equal(out[:, 0], image[:, 0])
    assert out[0, 1, 0, 0] == -1 and out[0, 1, 0, -1] == 1  # x runs left to right
    assert out[0, 2, 0, 0] == -1 and out[0, 2, -1, 0] == 1  # y runs top to bottom
    encoder = build("small_cnn", coord_channels=True)
    first_conv = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 3
    assert encoder(torch.randn(2, 1, SIZE, SIZE)).vector.shape == (2, 24)


def test_readout_arguments_are_checked():
    with pytest.raises(ValueError, match="readout must be"):
        build("small_cnn", readout="max")
    with pytest.raises(ValueError, match="readout_grid"):
        build("small_cnn", readout="flatten", readout_grid=0)


def test_coord_cnn_is_small_cnn_with_position_defaults():
    encoder = build("coord_cnn")
    assert encoder.coord_channels
    assert encoder.vector_proj[-1].in_features == 32 * 4 * 4
    assert encoder.pixel_proj[-1].in_features == 32 * 32
    plain = build("coord_cnn", coord_channels=False, readout="mean", pixel_pathway=0)
    assert not plain.coord_channels and plain.pixel_proj is None


def test_pixel_pathway_adds_a_linear_map_of_the_downsampled_image():
    encoder = build("small_cnn", pixel_pathway=8).eval()
    image = torch.randn(2, 1, SIZE, SIZE)
    with_wide = encoder(image).vector
    encoder.pixel_proj[-1].weight.data.zero_()
    encoder.pixel_proj[-1].bias.data.zero_()
    without = encoder(image).vector
    assert not torch.allclose(with_wide, without)
    assert encoder.pixel_proj[-1].in_features == 64
    # What it adds is linear in the (standardised) pooled pixels: doubling the image's deviation
    # from the running mean (0 at init) doubles the wide term.
    encoder = build("small_cnn", pixel_pathway=8).eval()
    wide = encoder.pixel_proj
    bias = wide[-1].bias
    assert torch.allclose(wide(2 * image) - bias, 2 * (wide(image) - bias), atol=1e-5)
    with pytest.raises(ValueError, match="pixel_pathway"):
        build("small_cnn", pixel_pathway=-1)


def test_pixel_pathway_trains_on_a_batch_of_one_image():
    """A training batch may hold a single image (the others lacking one); BatchNorm must not fail."""
    encoder = build("coord_cnn").train()
    features = encoder(torch.randn(1, 1, SIZE, SIZE))
    assert torch.isfinite(features.vector).all()
