"""localization_metrics: IoU of known boxes (MONAI), hit rate, per-label summaries."""

import json

import numpy as np
import pytest
import torch

from medmodal.evaluation.metrics import localization_metrics

PRED = np.array(
    [
        [[0, 0, 2, 2], [0, 0, 1, 1]],  # study 0: class 0, class 1
        [[5, 5, 6, 6], [0, 0, 10, 10]],  # study 1
    ],
    dtype=float,
)
TRUE = [
    [(0, [1, 1, 3, 3]), (1, [0, 0, 1, 1])],  # IoU 1/7 (overlap 1, union 4 + 4 - 1), IoU 1
    [(0, [0, 0, 1, 1]), (1, [0, 0, 5, 10])],  # IoU 0 (disjoint), IoU 50/100
]


def test_known_ious():
    m = localization_metrics(PRED, TRUE, ["nodule", "mass"])
    assert m["n_boxes"] == 4
    assert m["iou_mean"] == pytest.approx((1 / 7 + 1 + 0 + 0.5) / 4, abs=1e-6)
    assert m["hit_at_0_5"] == pytest.approx(2 / 4)  # IoU 1 and IoU exactly 0.5
    nodule, mass = m["per_label"]["nodule"], m["per_label"]["mass"]
    assert nodule["iou_mean"] == pytest.approx((1 / 7 + 0) / 2, abs=1e-6)
    assert (nodule["hit_at_0_5"], nodule["n_boxes"]) == (0.0, 2)
    assert (mass["iou_mean"], mass["hit_at_0_5"]) == (pytest.approx(0.75, abs=1e-6), 1.0)
    assert m["iou_mean_macro"] == pytest.approx(((1 / 7) / 2 + 0.75) / 2, abs=1e-6)
    json.dumps(m, allow_nan=False)


def test_same_iou_in_normalised_coordinates_and_torch_input():
    scaled = localization_metrics(
        torch.tensor(PRED / 10), [[(c, np.array(b) / 10) for c, b in s] for s in TRUE]
    )
    pixels = localization_metrics(PRED, TRUE)
    assert scaled["iou_mean"] == pytest.approx(pixels["iou_mean"], abs=1e-5)  # MONAI works in float32
    assert scaled["hit_at_0_5"] == pixels["hit_at_0_5"] == 0.5  # the exact-0.5 box is a hit in both


def test_studies_without_boxes_and_labels_without_boxes():
    m = localization_metrics(PRED, [[], [(1, [0, 0, 10, 10])]], ["nodule", "mass"])
    assert (m["n_boxes"], m["iou_mean"], m["hit_at_0_5"]) == (1, pytest.approx(1.0), 1.0)
    assert m["per_label"]["nodule"] == {"iou_mean": None, "hit_at_0_5": None, "n_boxes": 0}
    empty = localization_metrics(PRED, [[], []])
    assert (empty["iou_mean"], empty["hit_at_0_5"], empty["n_boxes"]) == (None, None, 0)


def test_several_true_boxes_of_one_class_each_meet_the_one_prediction():
    m = localization_metrics(PRED[:1], [[(0, [0, 0, 2, 2]), (0, [0, 0, 2, 1])]])
    assert m["iou_mean"] == pytest.approx((1 + 0.5) / 2)


def test_degenerate_prediction_scores_zero():
    pred = PRED.copy()
    pred[0, 1] = [1, 1, 0, 0]  # x1 < x0: overlaps nothing
    m = localization_metrics(pred, TRUE)
    assert m["per_label"]["label_1"]["iou_mean"] == pytest.approx(0.25)  # (0 + 0.5) / 2


@pytest.mark.parametrize(
    "true, message",
    [
        ([[(0, [2, 2, 1, 1])], []], r"true_boxes\[0\]\[0\]: invalid box"),
        ([[(2, [0, 0, 1, 1])], []], r"true_boxes\[0\]\[0\]: class index 2 outside 0\.\.1"),
        ([[(0, [0, 0, 1])], []], r"true_boxes\[0\]\[0\]: expected"),
        ([[]], "1 studies, pred_boxes 2"),
    ],
)
def test_bad_input(true, message):
    with pytest.raises(ValueError, match=message):
        localization_metrics(PRED, true)
