"""localization_metrics: IoU of known boxes (MONAI), hit rate, per-label summaries; detection_metrics:
COCO mAP (pycocotools) and FROC of scored boxes."""

import json

import numpy as np
import pytest
import torch

from medmodal.evaluation.metrics import localization_metrics
from medmodal.evaluation.metrics.localization import detection_metrics, froc_sensitivities

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


# ----------------------------------------------------------------- detection metrics (COCO, FROC)
NAMES = ["nodule", "mass", "edema"]
DET_TRUE = [
    [(0, [0.1, 0.1, 0.3, 0.3])],
    [(1, [0.5, 0.5, 0.9, 0.9]), (0, [0.6, 0.1, 0.8, 0.2])],
    [],
]


def test_perfect_detections_score_one_and_only_boxed_findings_count():
    dets = [[(c, box, 0.9) for c, box in study] for study in DET_TRUE]
    dets[2].append((2, [0.0, 0.0, 0.5, 0.5], 0.99))  # "edema" has no true box: not scored
    m = detection_metrics(dets, DET_TRUE, NAMES)
    assert m["map_50"] == pytest.approx(1.0) and m["map_50_95"] == pytest.approx(1.0)
    assert set(m["per_label"]) == {"nodule", "mass"}
    assert m["froc"] == {"0.5": pytest.approx(1.0), "1": pytest.approx(1.0), "2": pytest.approx(1.0)}
    assert m["n_images"] == 3 and m["n_boxes"] == 3


def test_known_average_precision_and_froc():
    # nodule: an FP scored above the TP, and an FP below -> precision 1/2 up to recall 1/2,
    # recall 1 never reached: AP = 0.5 * 51 / 101 (COCO's 101 recall points 0, 0.01, .., 1).
    # mass: its box exactly, alone: AP 1.
    dets = [
        [(0, [0.1, 0.1, 0.3, 0.3], 0.9), (1, [0.0, 0.0, 0.1, 0.1], 0.5)],
        [(1, [0.5, 0.5, 0.9, 0.9], 0.8), (0, [0.0, 0.6, 0.1, 0.7], 0.95)],
        [(0, [0.2, 0.2, 0.3, 0.3], 0.3)],
    ]
    m = detection_metrics(dets, DET_TRUE, NAMES)
    assert m["per_label"]["nodule"]["ap_50"] == pytest.approx(0.5 * 51 / 101)
    assert m["per_label"]["mass"]["ap_50"] == pytest.approx(1.0)
    assert m["map_50"] == pytest.approx((0.5 * 51 / 101 + 1.0) / 2)
    # pooled: TPs 0.9, 0.8; FPs 0.95, 0.5, 0.3 over 3 images and 3 true boxes. At 1/3 FP per image
    # (threshold 0.8) 2 of 3 boxes are found; more FPs find nothing more.
    assert m["froc"]["0.5"] == pytest.approx(2 / 3) and m["froc"]["2"] == pytest.approx(2 / 3)


def test_map_50_95_penalises_a_loose_box_that_map_50_accepts():
    # IoU of [0.1,0.1,0.3,0.3] with [0.1,0.1,0.3,0.36] = 0.04 / 0.052 = 0.77: a hit at 0.50..0.75 only
    dets = [[(0, [0.1, 0.1, 0.3, 0.36], 0.9)], [], []]
    truth = [[(0, [0.1, 0.1, 0.3, 0.3])], [], []]
    m = detection_metrics(dets, truth, NAMES)
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_50_95"] == pytest.approx(6 / 10)  # thresholds 0.50, 0.55, .., 0.75 of 10


def test_no_detections_and_no_true_boxes():
    empty = detection_metrics([[], [], []], DET_TRUE, NAMES)
    assert empty["map_50"] == 0.0 and empty["froc_mean"] == 0.0
    none = detection_metrics([[(0, [0, 0, 1, 1], 0.5)]], [[]], NAMES)
    assert none["map_50"] is None and none["froc"] is None and none["n_boxes"] == 0
    json.dumps(none)


@pytest.mark.parametrize(
    ("dets", "message"),
    [
        ([[(5, [0, 0, 1, 1], 0.5)], [], []], "class index 5"),
        ([[(0, [0, 0, 1], 0.5)], [], []], "expected"),
        ([[(0, [0, 0, 1, 1], float("nan"))], [], []], "NaN"),
        ([[], []], "studies"),
    ],
)
def test_detection_bad_input(dets, message):
    with pytest.raises(ValueError, match=message):
        detection_metrics(dets, DET_TRUE, NAMES)


def test_froc_reads_the_best_sensitivity_within_each_false_positive_budget():
    # 4 targets, 2 images. Descending: 0.9 TP, 0.8 FP, 0.7 TP, 0.6 FP, 0.5 FP, 0.4 TP
    got = froc_sensitivities(
        [0.9, 0.7, 0.4], [0.8, 0.6, 0.5], num_targets=4, num_images=2, fp_rates=(0.25, 0.5, 1, 2)
    )
    # 0 FP/image -> 1/4; 0.5 (threshold 0.7) -> 2/4; 1.0 (0.6) -> 2/4; 1.5 (0.4) -> 3/4
    assert got == {"0.25": 0.25, "0.5": 0.5, "1": 0.5, "2": 0.75}
    tied = froc_sensitivities([0.5, 0.5], [], num_targets=2, num_images=1, fp_rates=(0.5,))
    assert tied == {"0.5": 1.0}  # every detection scored alike still counts
