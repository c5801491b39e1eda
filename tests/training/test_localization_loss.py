"""The dense (CenterNet) localization targets and loss of medmodal.training.losses."""

from __future__ import annotations

import pytest
import torch

from medmodal.config import TrainConfig
from medmodal.models.localization import decode_boxes, decode_class_boxes
from medmodal.models.types import LocalizationOutput, ModelOutput
from medmodal.training.losses import (
    MultitaskLoss,
    centre_focal_loss,
    centre_targets,
    gaussian_radius,
    log_size_l1,
)


def test_gaussian_radius_matches_the_centernet_reference_and_grows_with_size():
    # CenterNet's gaussian_radius((8, 8), 0.7) = 2.186 (its third case), (2, 2) -> 0.546
    assert float(gaussian_radius(torch.tensor(8.0), torch.tensor(8.0))) == pytest.approx(2.1865, abs=1e-3)
    assert float(gaussian_radius(torch.tensor(2.0), torch.tensor(2.0))) == pytest.approx(0.5466, abs=1e-3)
    sizes = torch.tensor([1.0, 3.0, 10.0, 30.0])
    assert (gaussian_radius(sizes, sizes).diff() > 0).all()


def test_centre_targets_peak_at_each_box_centre_on_its_class_map():
    box_list = torch.tensor([[[0.10, 0.10, 0.30, 0.30], [0.55, 0.60, 0.95, 0.90], [0, 0, 0, 0]]])
    box_labels = torch.tensor([[2, 0, -1]])
    t = centre_targets(box_list, box_labels, num_labels=3, height=8, width=8)
    assert t.heatmap.shape == (1, 3, 8, 8)
    # box 0: centre (0.2, 0.2) * 8 = (1.6, 1.6) -> cell (1, 1), offset (0.6, 0.6); on class 2's map
    assert t.cells[0, 0].tolist() == [1, 1] and torch.allclose(t.offsets[0, 0], torch.tensor([0.6, 0.6]))
    assert t.heatmap[0, 2, 1, 1] == 1.0 and t.heatmap[0, 0, 1, 1] < 1.0
    # box 1: centre (0.75, 0.75) * 8 = (6, 6) -> cell (6, 6) on class 0's map; class 1 has no box
    assert t.heatmap[0, 0, 6, 6] == 1.0
    assert t.heatmap[0, 1].max() == 0.0
    assert t.valid.tolist() == [[True, True, False]]
    assert int((t.heatmap == 1.0).sum()) == 2  # exactly one centre per box


def test_focal_loss_is_lower_for_a_heatmap_that_matches_the_target():
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 3, 4] = 1.0
    good = torch.full((1, 1, 8, 8), -8.0)
    good[0, 0, 3, 4] = 8.0
    bad = torch.full((1, 1, 8, 8), -8.0)
    bad[0, 0, 6, 1] = 8.0
    keep = torch.ones(1, 1, dtype=torch.bool)
    assert centre_focal_loss(good, target, keep) < 0.01 < centre_focal_loss(bad, target, keep)
    # a map left out by the mask contributes nothing
    assert centre_focal_loss(bad, target, ~keep) == 0.0


def _output(b=2, c=3, h=8, w=8, requires_grad=True) -> LocalizationOutput:
    heat = torch.full((b, c, h, w), -4.6).requires_grad_(requires_grad)
    log_sizes = torch.zeros(b, 2, h, w).requires_grad_(requires_grad)
    offsets = torch.full((b, 2, h, w), 0.5).requires_grad_(requires_grad)
    return LocalizationOutput(boxes=torch.zeros(b, c, 4), scores=torch.zeros(b, c), heatmaps=heat,
                              log_sizes=log_sizes, offsets=offsets)  # fmt: skip


def _batch(labels, box_list, box_labels):
    b = len(labels)
    return {
        "labels": torch.tensor(labels, dtype=torch.float32),
        "has_image": torch.ones(b, dtype=torch.bool),
        "has_text": torch.ones(b, dtype=torch.bool),
        "box_list": torch.tensor(box_list, dtype=torch.float32),
        "box_labels": torch.tensor(box_labels),
    }


def test_a_present_finding_without_a_box_is_left_out_of_its_heatmap():
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    # study 0: class 0 boxed; class 1 labelled present but unboxed. study 1: nothing.
    batch = _batch([[1, 1, 0], [0, 0, 0]], [[[0.1, 0.1, 0.3, 0.3]], [[0, 0, 0, 0]]], [[0], [-1]])
    out = _output()
    loss.localization_loss(out, batch, torch.ones(2, dtype=torch.bool)).backward()
    grad = out.heatmaps.grad
    assert grad[0, 1].abs().sum() == 0  # unboxed positive: no signal either way
    assert grad[0, 0].abs().sum() > 0 and grad[0, 2].abs().sum() > 0 and grad[1].abs().sum() > 0


def test_box_regression_is_trained_only_at_true_centres_and_fits_the_box():
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    batch = _batch([[1, 0, 0]], [[[0.40, 0.40, 0.60, 0.70]]], [[0]])
    heat = torch.full((1, 3, 8, 8), -4.6, requires_grad=True)
    log_sizes = torch.zeros(1, 2, 8, 8, requires_grad=True)
    raw_offsets = torch.zeros(1, 2, 8, 8, requires_grad=True)
    optimiser = torch.optim.Adam([heat, log_sizes, raw_offsets], lr=0.1)
    for _ in range(150):
        optimiser.zero_grad()
        out = LocalizationOutput(boxes=torch.zeros(1, 3, 4), scores=torch.zeros(1, 3), heatmaps=heat,
                                 log_sizes=log_sizes, offsets=torch.sigmoid(raw_offsets))  # fmt: skip
        loss.localization_loss(out, batch, torch.ones(1, dtype=torch.bool)).backward()
        optimiser.step()
    # centre (0.5, 0.55) * 8 = (4, 4.4) -> cell column 4, row 4
    assert log_sizes.grad.abs().sum(dim=1)[0].nonzero().tolist() == [[4, 4]]
    box = decode_boxes(torch.sigmoid(raw_offsets), log_sizes)[0, 4, 4]
    assert torch.allclose(box, torch.tensor([0.40, 0.40, 0.60, 0.70]), atol=0.02)
    assert int(heat[0, 0].flatten().argmax()) == 4 * 8 + 4


def test_no_box_in_the_batch_still_gives_a_finite_loss_with_a_graph():
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    batch = _batch([[0, 0, 0], [0, 1, 0]], [[[0, 0, 0, 0]], [[0, 0, 0, 0]]], [[-1], [-1]])
    out = _output()
    value = loss.localization_loss(out, batch, torch.ones(2, dtype=torch.bool))
    assert torch.isfinite(value)
    value.backward()  # the negatives still train the heatmaps
    assert out.heatmaps.grad.abs().sum() > 0


def test_multitask_loss_reports_the_localization_part():
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    batch = _batch([[1, 0, 0], [0, 0, 1]], [[[0.1, 0.1, 0.3, 0.3]], [[0.5, 0.5, 0.9, 0.8]]], [[0], [2]])
    out = ModelOutput(logits=torch.zeros(2, 3), localization=_output())
    parts = loss(out, batch).parts
    assert set(parts) == {"classification", "localization"}
    assert parts["localization"] > 0


@pytest.mark.parametrize("weight", [0.0])
def test_zero_weight_leaves_localization_out(weight):
    cfg = TrainConfig()
    cfg.loss_weights.localization = weight
    loss = MultitaskLoss(cfg, num_labels=3, pad_id=0)
    batch = _batch([[1, 0, 0]], [[[0.1, 0.1, 0.3, 0.3]]], [[0]])
    out = ModelOutput(logits=torch.zeros(1, 3), localization=_output(b=1))
    assert "localization" not in loss(out, batch).parts


def test_lower_gaussian_overlap_widens_the_centre_targets():
    box_list, box_labels = torch.tensor([[[0.2, 0.2, 0.8, 0.8]]]), torch.tensor([[0]])
    narrow = centre_targets(box_list, box_labels, 1, 16, 16, min_overlap=0.7).heatmap
    wide = centre_targets(box_list, box_labels, 1, 16, 16, min_overlap=0.3).heatmap
    assert narrow.max() == wide.max() == 1.0 and wide.sum() > narrow.sum()


def test_log_size_l1_is_zero_for_the_true_size_in_log_cells():
    boxes = torch.tensor([[0.25, 0.0, 0.75, 0.125]])  # 4 x 1 cells on an 8 x 8 map
    exact = torch.log(torch.tensor([[4.0, 1.0]]))
    assert float(log_size_l1(exact, boxes, 8, 8)) == pytest.approx(0.0, abs=1e-6)
    assert float(log_size_l1(exact + 0.5, boxes, 8, 8)) == pytest.approx(0.5, abs=1e-6)


def test_config_sets_the_log_size_term_and_the_gaussian_overlap():
    batch = _batch([[1, 0, 0]], [[[0.1, 0.1, 0.3, 0.3]]], [[0]])
    seen = torch.ones(1, dtype=torch.bool)
    base = float(MultitaskLoss(TrainConfig(), 3, 0).localization_loss(_output(b=1), batch, seen))
    sized = TrainConfig(localization_log_size_weight=1.0)
    # log sizes 0 (1 cell) against a 1.6-cell box: |log 1.6| = 0.47 per side
    assert float(MultitaskLoss(sized, 3, 0).localization_loss(_output(b=1), batch, seen)) == pytest.approx(
        base + float(torch.log(torch.tensor(1.6))), abs=1e-4
    )
    big = _batch([[1, 0, 0]], [[[0.2, 0.2, 0.8, 0.8]]], [[0]])  # 4.8 cells: radius 1 at 0.7, 2 at 0.3
    flat = _output(b=1, requires_grad=False)
    flat.heatmaps.fill_(0.0)  # p = 0.5 everywhere: the penalty near the centre shows the target's width
    narrow = float(MultitaskLoss(TrainConfig(), 3, 0).localization_loss(flat, big, seen))
    wide = TrainConfig(localization_gaussian_overlap=0.3)
    assert float(MultitaskLoss(wide, 3, 0).localization_loss(flat, big, seen)) < narrow - 0.01


def _fit_two_findings_at_one_centre(size_pairs: int, steps: int = 150):
    """Two boxes of findings 0 and 2 centred at one cell (5 and 2 cells wide); the head's maps fitted
    by the localization loss alone, with ``size_pairs`` size maps (1 shared, 3 per finding)."""
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    boxes = [[[0.1875, 0.1875, 0.8125, 0.8125], [0.375, 0.375, 0.625, 0.625]]]  # centre (0.5, 0.5)
    batch = _batch([[1, 0, 1]], boxes, [[0, 2]])
    heat = torch.full((1, 3, 8, 8), -4.6, requires_grad=True)
    log_sizes = torch.zeros(1, 2 * size_pairs, 8, 8, requires_grad=True)
    raw_offsets = torch.zeros(1, 2, 8, 8, requires_grad=True)
    optimiser = torch.optim.Adam([heat, log_sizes, raw_offsets], lr=0.1)
    for _ in range(steps):
        optimiser.zero_grad()
        out = LocalizationOutput(boxes=torch.zeros(1, 3, 4), scores=torch.zeros(1, 3), heatmaps=heat,
                                 log_sizes=log_sizes, offsets=torch.sigmoid(raw_offsets))  # fmt: skip
        loss.localization_loss(out, batch, torch.ones(1, dtype=torch.bool)).backward()
        optimiser.step()
    return decode_class_boxes(torch.sigmoid(raw_offsets), log_sizes)[0, :, 4, 4], log_sizes, boxes[0]


def test_per_finding_size_maps_are_trained_at_their_own_finding_s_centres():
    fitted, log_sizes, (big, small) = _fit_two_findings_at_one_centre(size_pairs=3)
    assert torch.allclose(fitted[0], torch.tensor(big), atol=0.02)
    assert torch.allclose(fitted[2], torch.tensor(small), atol=0.02)
    assert log_sizes.grad[0, 2:4].abs().sum() == 0  # finding 1 has no box: its size map gets nothing
    assert log_sizes.grad[0].abs().sum(dim=0).nonzero().tolist() == [[4, 4]]
    shared, _, _ = _fit_two_findings_at_one_centre(size_pairs=1)  # one box for both findings
    assert shared.shape == (1, 4)
    misses = [float((shared[0] - torch.tensor(box)).abs().max()) for box in (big, small)]
    assert max(misses) > 0.1  # misses at least one of them by more than a cell


def test_log_size_term_reads_the_box_s_own_finding_map():
    batch = _batch([[0, 0, 1]], [[[0.1, 0.1, 0.3, 0.3]]], [[2]])  # a 1.6-cell box of finding 2
    seen = torch.ones(1, dtype=torch.bool)
    out = _output(b=1, requires_grad=False)
    out.log_sizes = torch.zeros(1, 6, 8, 8)
    out.log_sizes[0, 4:6] = float(torch.log(torch.tensor(1.6)))  # finding 2's map has the exact size
    plain = float(MultitaskLoss(TrainConfig(), 3, 0).localization_loss(out, batch, seen))
    sized = TrainConfig(localization_log_size_weight=1.0)
    assert float(MultitaskLoss(sized, 3, 0).localization_loss(out, batch, seen)) == pytest.approx(
        plain, abs=1e-5
    )
    out.log_sizes[0, 4:6] = 0.0  # now finding 2's map is off by log 1.6; finding 0's map is never read
    out.log_sizes[0, 0:2] = float(torch.log(torch.tensor(1.6)))
    assert float(MultitaskLoss(sized, 3, 0).localization_loss(out, batch, seen)) == pytest.approx(
        float(MultitaskLoss(TrainConfig(), 3, 0).localization_loss(out, batch, seen))
        + float(torch.log(torch.tensor(1.6))),
        abs=1e-4,
    )
