"""Text-guided segmentation task: Dice / IoU on known cases, label maps, a tiny end-to-end run (network: tests/models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from medmodal.cli.main import main
from medmodal.data.types import Study
from medmodal.tasks.segmentation import mask_path, read_label_map, segmentation_metrics


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
    assert small.dtype == torch.long and small.tolist() == [
        [3, 3, 0, 0],
        [3, 3, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    with pytest.raises(ValueError, match="label value 3"):
        read_label_map(tmp_path / "m.png", 4, num_classes=3)
    with pytest.raises(ValueError, match="row 5 \\(id s9\\), field 'mask'"):
        mask_path(Study(id="s9", row=5), tmp_path, "manifest.csv")


@pytest.mark.slow
def test_train_and_evaluate_both_variants_end_to_end(tiny_data, tmp_path):
    config = tmp_path / "seg.yaml"
    config.write_text("embed_dim: 8\nfeatures: [4, 4, 8, 8, 16, 4]\ntrain: {epochs: 1, batch_size: 16}\n")
    run = tmp_path / "run"
    for conditioning in ("film", "none"):
        out = run / conditioning
        base = [
            "-q",
            "segment",
            "train",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--config",
            str(config),
        ]
        assert main([*base, "--conditioning", conditioning]) == 0
        assert main(["-q", "segment", "evaluate", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())["segmentation"]
        assert metrics["conditioning"] == conditioning
        assert set(metrics["per_class"]) == set(json.loads((tiny_data / "labels.json").read_text()))
        assert metrics["dice_mean"] is not None and 0.0 <= metrics["dice_mean"] <= 1.0
        assert sum(row["n"] for row in metrics["per_class"].values()) > 0
