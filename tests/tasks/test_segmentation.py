"""Text-guided segmentation: FiLM, U-Net shapes and gradient flow, Dice / IoU on known cases, a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medmodal.cli.main import main
from medmodal.data.types import Study
from medmodal.models import registry
from medmodal.tasks.segmentation import FiLM, TextGuidedUNet, mask_path, read_label_map, segmentation_metrics

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


def test_metrics_on_known_label_maps():
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1  # class 1: 4 pixels in study 0
    target[1, 0, :] = 2  # class 2: 4 pixels in study 1
    predicted = target.clone()
    perfect = segmentation_metrics(predicted, target, ["a", "b", "c"])
    assert perfect["per_class"]["a"] == {"dice": 1.0, "iou": 1.0, "dice_all": 1.0, "n": 1}
    assert perfect["per_class"]["c"]["n"] == 0 and perfect["per_class"]["c"]["dice"] is None
    assert perfect["dice_mean"] == 1.0 and perfect["iou_mean"] == 1.0

    predicted = target.clone()
    predicted[0, 0, :2] = 0  # class 1: 2 of 4 pixels found -> Dice 2*2/(2+4) = 2/3, IoU 2/4
    predicted[1, 3, 3] = 1  # a false-positive class-1 pixel in study 1, which has no class 1
    scores = segmentation_metrics(predicted, target, ["a", "b", "c"])
    assert scores["per_class"]["a"]["dice"] == pytest.approx(2 / 3)
    assert scores["per_class"]["a"]["iou"] == pytest.approx(0.5)
    assert scores["per_class"]["a"]["dice_all"] == pytest.approx((2 / 3 + 0.0) / 2)  # study 1 counted 0
    assert scores["per_class"]["b"]["dice"] == pytest.approx(1.0)
    assert scores["dice_mean"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_label_maps_are_resized_by_nearest_neighbour_and_checked(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[:4, :4] = 3
    Image.fromarray(labels).save(tmp_path / "m.png")
    small = read_label_map(tmp_path / "m.png", 4, num_classes=7)
    assert small.dtype == torch.long and small.tolist() == [[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="label value 3"):
        read_label_map(tmp_path / "m.png", 4, num_classes=3)
    with pytest.raises(ValueError, match="row 5 \\(id s9\\), field 'mask'"):
        mask_path(Study(id="s9", row=5), tmp_path, "manifest.csv")


def test_train_and_evaluate_both_variants_end_to_end(tiny_data, tmp_path):
    config = tmp_path / "seg.yaml"
    config.write_text("embed_dim: 8\nfeatures: [4, 4, 8, 8, 16, 4]\ntrain: {epochs: 1, batch_size: 16}\n")
    run = tmp_path / "run"
    for conditioning in ("film", "none"):
        out = run / conditioning
        base = ["-q", "segment", "train", "--data", str(tiny_data), "--out", str(out), "--config", str(config)]
        assert main([*base, "--conditioning", conditioning]) == 0
        assert main(["-q", "segment", "evaluate", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())["segmentation"]
        assert metrics["conditioning"] == conditioning
        assert set(metrics["per_class"]) == set(json.loads((tiny_data / "labels.json").read_text()))
        assert metrics["dice_mean"] is not None and 0.0 <= metrics["dice_mean"] <= 1.0
        assert sum(row["n"] for row in metrics["per_class"].values()) > 0
