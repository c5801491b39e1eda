import logging

import pytest
import torch

from medmodal.config import ModelConfig, PartConfig
from medmodal.models import PretrainedWeightsError, create, create_model, load_pretrained

from .helpers import BOS, EOS, NUM_LABELS, PAD, VOCAB


def small_cnn(out_dim: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    return create(
        "image_encoder", "small_cnn", in_channels=1, out_dim=out_dim, widths=(8, 16), stem_width=8
    ).eval()


def outputs_equal(a, b, image) -> bool:
    fa, fb = a(image), b(image)
    return torch.equal(fa.vector, fb.vector) and torch.equal(fa.grid, fb.grid)


@pytest.fixture
def image():
    return torch.randn(2, 1, 32, 32)


def test_state_dict_round_trip(tmp_path, image):
    source, fresh = small_cnn(seed=1), small_cnn(seed=2)
    assert not outputs_equal(source, fresh, image)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    report = load_pretrained(fresh, tmp_path / "w.pt")
    assert outputs_equal(source, fresh, image)
    assert report.missing == [] and report.unexpected == []
    assert set(report.loaded) == set(source.state_dict())


@pytest.mark.parametrize(
    ("container", "prefix"),
    [("state_dict", "model.image_encoder."), ("model", "module."), (None, "encoder.")],
)
def test_checkpoint_containers_and_prefixes(tmp_path, image, container, prefix):
    source, fresh = small_cnn(seed=1), small_cnn(seed=2)
    state = {prefix + key: value for key, value in source.state_dict().items()}
    state["model.classifier.weight"] = torch.zeros(3, 3)  # another part's weights: unused
    saved = {container: state, "epoch": 3} if container else state
    torch.save(saved, tmp_path / "ckpt.pt")
    report = load_pretrained(fresh, tmp_path / "ckpt.pt")
    assert report.strip_prefix == prefix
    assert "model.classifier.weight" in report.unexpected
    assert outputs_equal(source, fresh, image)


def test_plain_monai_weights_load_into_the_wrapping_encoder(tmp_path, caplog):
    from monai.networks.nets import resnet18

    net = resnet18(spatial_dims=2, n_input_channels=1, conv1_t_stride=2, feed_forward=False)
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    encoder = create("image_encoder", "resnet18", in_channels=1, out_dim=8)
    with caplog.at_level(logging.WARNING):
        report = load_pretrained(encoder, tmp_path / "resnet18.pt")
    assert report.add_prefix == "body.net."
    assert torch.equal(encoder.body.net.conv1.weight, net.conv1.weight)
    assert any(key.startswith("vector_proj") for key in report.missing)  # the read-out stays random
    assert "keep their initialisation" in caplog.text


def test_shape_mismatch_is_an_error(tmp_path):
    torch.save(small_cnn(out_dim=16).state_dict(), tmp_path / "w.pt")
    with pytest.raises(
        PretrainedWeightsError,
        match=r"(?s)shape mismatch for 2 tensor.*vector_proj.2.weight: file \(16, 16\) vs module \(32, 16\)",
    ):
        load_pretrained(small_cnn(out_dim=32), tmp_path / "w.pt")


def test_unrelated_weights_are_an_error(tmp_path):
    text = create("text_encoder", "bilstm_attention", vocab_size=VOCAB, out_dim=8, pad_id=PAD)
    torch.save(text.state_dict(), tmp_path / "text.pt")
    with pytest.raises(PretrainedWeightsError, match="no parameter name matches"):
        load_pretrained(small_cnn(), tmp_path / "text.pt")


def test_a_file_that_is_not_weights_is_an_error(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="not a readable weights file"):
        load_pretrained(small_cnn(), tmp_path / "notes.pt")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pt")
    with pytest.raises(PretrainedWeightsError, match="expected a state_dict"):
        load_pretrained(small_cnn(), tmp_path / "no_tensors.pt")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pretrained(small_cnn(), tmp_path / "nope.pt")


def test_create_model_loads_pretrained_parts(tmp_path):
    image_part = {"name": "small_cnn", "kwargs": {"widths": [8, 16], "stem_width": 8}}
    source = create("image_encoder", "small_cnn", in_channels=1, out_dim=16, widths=(8, 16), stem_width=8)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "cnn.ckpt")
    cfg = ModelConfig(
        embed_dim=16,
        image_encoder=PartConfig(**image_part, pretrained_path=str(tmp_path / "cnn.ckpt")),
    )
    model = create_model(cfg, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    for key, value in source.state_dict().items():
        assert torch.equal(model.image_encoder.state_dict()[key], value), key
