"""Expected calibration error and reliability curve, against hand-computed values and torchmetrics."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_calibration_error

from medmodal.evaluation.metrics import expected_calibration_error, reliability_curve


def test_perfectly_calibrated_is_zero():
    # 0.2 predicted for 5 cases of which 1 is positive, 0.8 for 5 of which 4 are
    probs = np.array([0.2] * 5 + [0.8] * 5)
    targets = np.array([1, 0, 0, 0, 0] + [1, 1, 1, 1, 0])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0)


def test_overconfident():
    probs = np.full((4, 2), 0.9)  # 0.9 everywhere, half the targets positive
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4)


def test_hand_computed_two_bins():
    probs, targets = [0.1, 0.3, 0.7, 0.9], [0, 1, 1, 1]
    # bin [0, .5): confidence .2, frequency .5; bin [.5, 1]: .8 vs 1; each half the samples
    assert expected_calibration_error(probs, targets, n_bins=2) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    curve = reliability_curve(probs, targets, n_bins=2)
    assert curve["bin_centers"] == [0.25, 0.75]
    assert curve["counts"] == [2, 2]
    assert curve["confidence"] == pytest.approx([0.2, 0.8])
    assert curve["accuracy"] == pytest.approx([0.5, 1.0])


def test_empty_bins_and_probability_one():
    curve = reliability_curve([0.05, 1.0], [0, 1], n_bins=4)
    assert curve["counts"] == [1, 0, 0, 1]  # 1.0 falls in the last bin
    assert curve["accuracy"][1] is None and curve["confidence"][2] is None
    assert expected_calibration_error([0.05, 1.0], [0, 1], n_bins=4) == pytest.approx(0.5 * 0.05)


def test_matches_torchmetrics():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 0.999, size=(200, 5))
    targets = (rng.uniform(size=(200, 5)) < probs**2).astype(int)
    ours = expected_calibration_error(probs, targets, n_bins=15)
    theirs = binary_calibration_error(
        torch.tensor(probs.ravel()), torch.tensor(targets.ravel()), n_bins=15, norm="l1"
    ).item()
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert ours > 0.05  # squared probabilities: clearly miscalibrated
    curve = reliability_curve(probs, targets, n_bins=15)
    n = sum(curve["counts"])
    from_curve = sum(
        c / n * abs(a - f) for c, a, f in zip(curve["counts"], curve["accuracy"], curve["confidence"]) if c
    )
    assert from_curve == pytest.approx(ours)


def test_bad_input():
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="sigmoid"):
        expected_calibration_error([1.5], [1])
