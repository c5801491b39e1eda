"""The segmentation baseline (medmodal/tasks/segmentation_baseline.py): the report's findings painted
with their mean training masks, thresholds chosen on validation."""

from __future__ import annotations

import json

import pytest
import torch

from medmodal.tasks.segmentation_baseline import (
    choose_thresholds,
    evaluate_mean_mask_baseline,
    mean_masks,
    paint,
)

CLASSES = ["big", "small"]


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 4x4 label maps: class 1 ('big') fills the left half in two studies and the left column in
    one; class 2 ('small') is the top-right pixel in one study."""
    maps = torch.zeros(4, 4, 4, dtype=torch.long)
    maps[0, :, :2] = 1
    maps[1, :, :2] = 1
    maps[2, :, :1] = 1
    maps[3, 0, 3] = 2
    present = torch.tensor([[True, False], [True, False], [True, False], [False, True]])
    return maps, present


def test_mean_masks_are_shares_among_the_studies_stating_the_class():
    maps, present = _maps()
    means = mean_masks(maps, present)
    assert means.shape == (2, 4, 4)
    torch.testing.assert_close(means[0, 0], torch.tensor([1.0, 2 / 3, 0.0, 0.0]))
    assert float(means[1, 0, 3]) == 1.0 and float(means[1].sum()) == 1.0  # one study states 'small'
    assert float(mean_masks(maps, torch.zeros(4, 2, dtype=torch.bool)).abs().sum()) == 0.0


def test_paint_draws_only_stated_classes_larger_regions_first():
    means = torch.zeros(2, 4, 4)
    means[0] = 0.9  # 'big' everywhere
    means[1, 0, 0] = 0.9  # 'small' at the top-left pixel, on top of 'big'
    both = torch.tensor([[True, True], [True, False], [False, False]])
    out = paint(means, [0.5, 0.5], both)
    assert int(out[0, 0, 0]) == 2 and int((out[0] == 1).sum()) == 15  # the small one stays visible
    assert int((out[1] == 1).sum()) == 16 and int(out[2].abs().sum()) == 0


def test_thresholds_are_chosen_for_the_best_dice():
    maps, present = _maps()
    means = mean_masks(maps, present)
    thresholds = choose_thresholds(means, maps, present, CLASSES)
    # 'big': painting the left half (share >= 2/3) beats painting the left column only (share 1.0)
    assert 0.05 <= thresholds[0] <= 0.65
    painted = paint(means, thresholds, present)
    assert torch.equal(painted[0], maps[0]) and torch.equal(painted[3], maps[3])


def test_the_baseline_scores_a_dataset_with_the_unets_metrics(tiny_data, tmp_path):
    from medmodal.cli.main import main

    metrics = evaluate_mean_mask_baseline(tiny_data, size=32, split="test")
    assert metrics["n_studies"] > 0 and set(metrics["thresholds"]) == set(metrics["per_class"])
    rows = [row for row in metrics["per_class"].values() if row["n"]]
    assert rows and all(0.0 <= row["dice"] <= 1.0 for row in rows)
    assert metrics["dice_mean"] == pytest.approx(sum(row["dice"] for row in rows) / len(rows))
    out = tmp_path / "baseline.json"
    assert (
        main(["-q", "segment", "baseline", "--data", str(tiny_data), "--image-size", "32", "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["dice_mean"] == pytest.approx(metrics["dice_mean"])
