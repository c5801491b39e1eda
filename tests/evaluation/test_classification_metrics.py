"""classification_metrics / best_f1_thresholds against hand-computed values."""

import json

import numpy as np
import pytest
import torch

from medmodal.evaluation.metrics import best_f1_thresholds, classification_metrics

# Label A is scikit-learn's textbook example (AUROC 0.75, AP 0.8333); B is
# perfectly ranked; C has no positive, so its AUROC is undefined.
PROBS = np.array(
    [
        [0.10, 0.2, 0.1],
        [0.40, 0.4, 0.2],
        [0.35, 0.1, 0.3],
        [0.80, 0.9, 0.4],
    ]
)
TARGETS = np.array(
    [
        [0, 0, 0],
        [0, 1, 0],
        [1, 0, 0],
        [1, 1, 0],
    ]
)
NAMES = ["a", "b", "c"]


def test_hand_computed_values():
    m = classification_metrics(PROBS, TARGETS, NAMES)
    a, b, c = (m["per_label"][k] for k in NAMES)
    assert a["auroc"] == pytest.approx(0.75)  # 3 of 4 (positive, negative) pairs ranked right
    assert a["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert b["auroc"] == pytest.approx(1.0)
    # threshold 0.5: A predicts [0,0,0,1] (TP 1, FN 1) -> P 1, R 0.5, F1 2/3; B likewise
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert b["f1"] == pytest.approx(2 / 3)
    assert c["f1"] == 0.0 and c["accuracy"] == 1.0
    assert (a["prevalence"], a["n_positive"]) == (0.5, 2)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["accuracy"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)  # mean per-label accuracy
    assert m["exact_match"] == pytest.approx(0.5)  # rows 1 (B) and 2 (A) have a wrong label
    assert m["n_samples"] == 4


def test_undefined_auroc_is_excluded_and_counted():
    m = classification_metrics(PROBS, TARGETS, NAMES)
    assert m["per_label"]["c"]["auroc"] is None
    assert m["per_label"]["c"]["average_precision"] is None
    assert m["auroc_labels_used"] == 2 and m["auroc_labels_excluded"] == 1
    assert m["auroc_macro"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["average_precision_macro"] == pytest.approx((5 / 6 + 1.0) / 2)
    one_class = classification_metrics(np.array([[0.2], [0.7]]), np.array([[1], [1]]))
    assert one_class["auroc_macro"] is None and one_class["auroc_micro"] is None
    assert one_class["auroc_labels_used"] == 0


def test_micro_auroc_pools_all_pairs():
    m = classification_metrics(PROBS[:, :2], TARGETS[:, :2])
    # positives .35 .8 .4 .9 vs negatives .1 .4 .2 .1: 14.5 of 16 pairs (the 0.4 tie counts 1/2)
    assert m["auroc_micro"] == pytest.approx(14.5 / 16)


def test_per_label_thresholds():
    m = classification_metrics(PROBS, TARGETS, NAMES, threshold=[0.3, 0.5, 0.5])
    a = m["per_label"]["a"]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert a["threshold"] == 0.3
    with pytest.raises(ValueError, match="one per label"):
        classification_metrics(PROBS, TARGETS, threshold=[0.5, 0.5])


def test_best_f1_thresholds():
    thr = best_f1_thresholds(PROBS, TARGETS)
    # A: >= 0.35 gives TP 2, FP 1 (F1 0.8), the best; B: >= 0.4 separates perfectly; C: default
    np.testing.assert_allclose(thr, [0.35, 0.4, 0.5])
    tuned = classification_metrics(PROBS, TARGETS, NAMES, threshold=thr)
    assert tuned["per_label"]["a"]["f1"] == pytest.approx(0.8)
    assert tuned["per_label"]["b"]["f1"] == pytest.approx(1.0)


def test_torch_input_and_json():
    m = classification_metrics(torch.tensor(PROBS), torch.tensor(TARGETS), NAMES)
    assert m == classification_metrics(PROBS, TARGETS, NAMES)
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    "probs, targets, message",
    [
        (PROBS, TARGETS[:, :2], "must both be"),
        (PROBS * 5, TARGETS, "apply a sigmoid"),
        (np.where(PROBS > 0.7, np.nan, PROBS), TARGETS, "NaN"),
        (PROBS, TARGETS * 2, "0 / 1"),
        (PROBS[:0], TARGETS[:0], "no samples"),
    ],
)
def test_bad_input(probs, targets, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(probs, targets)


def _pooled_f1(probs, targets, thresholds):
    """Micro F1 of ``probs >= thresholds`` (scikit-learn's definition, written out: it runs
    thousands of times in the exhaustive search below)."""
    predicted, actual = probs >= thresholds, targets == 1
    true_pos = (predicted & actual).sum()
    wrong = (predicted != actual).sum()
    return 2 * true_pos / (2 * true_pos + wrong) if true_pos or wrong else 0.0


def test_the_pooled_f1_helper_is_scikit_learns_micro_f1():
    from sklearn.metrics import f1_score

    thresholds = np.array([0.35, 0.4, 0.5])
    expected = f1_score(TARGETS, PROBS >= thresholds, average="micro", zero_division=0)
    assert _pooled_f1(PROBS, TARGETS, thresholds) == pytest.approx(expected)


def test_best_micro_f1_thresholds_matches_an_exhaustive_search():
    import itertools

    from medmodal.evaluation.metrics import NEVER_THRESHOLD, best_micro_f1_thresholds

    rng = np.random.default_rng(0)
    for _ in range(8):
        targets = (rng.random((30, 3)) < 0.3).astype(int)
        probs = np.clip(targets * 0.3 + rng.random((30, 3)) * 0.7, 0, 1).round(1)  # <= 11 scores per label
        candidates = [np.r_[NEVER_THRESHOLD, np.unique(probs[:, j])] for j in range(3)]
        best = max(_pooled_f1(probs, targets, np.array(c)) for c in itertools.product(*candidates))
        found = _pooled_f1(probs, targets, best_micro_f1_thresholds(probs, targets))
        assert found == pytest.approx(best)
        assert found >= _pooled_f1(probs, targets, best_f1_thresholds(probs, targets)) - 1e-12


def test_a_label_that_only_costs_pooled_f1_is_never_predicted():
    from medmodal.evaluation.metrics import NEVER_THRESHOLD, best_micro_f1_thresholds

    # Label 0 is perfect; label 1's only positive sits below three negatives: alone its best F1
    # (0.4 at >= 0.1) predicts all five; pooled, predicting it costs more than it brings.
    probs = np.array([[0.9, 0.9], [0.8, 0.8], [0.7, 0.7], [0.2, 0.1], [0.1, 0.05]])
    targets = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 0]])
    assert best_f1_thresholds(probs, targets)[1] == pytest.approx(0.1)
    thresholds = best_micro_f1_thresholds(probs, targets)
    np.testing.assert_allclose(thresholds, [0.7, NEVER_THRESHOLD])
    assert _pooled_f1(probs, targets, thresholds) == pytest.approx(6 / 7)
