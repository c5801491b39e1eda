"""Per-label Platt scaling: the fit on known cases, the logit transform, the calibration file."""

import json

import numpy as np
import pytest

from medmodal.evaluation.metrics import expected_calibration_error
from medmodal.models.calibration import MIN_SCALE, PlattScaling, fit_platt_scaling, probability_logits


def _shifted_problem(n=20000, seed=0):
    """Logits z of a model whose true probability is sigmoid(0.5 z - 1.5) (over-confident, too high)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, 2))
    true_p = 1 / (1 + np.exp(-(0.5 * z - 1.5)))
    return z, (rng.random((n, 2)) < true_p).astype(float)


def test_fit_recovers_a_known_scale_and_shift_and_lowers_ece():
    z, y = _shifted_problem()
    scaling = fit_platt_scaling(z, y, ["a", "b"])
    assert scaling.scale == pytest.approx([0.5, 0.5], abs=0.03)
    assert scaling.bias == pytest.approx([-1.5, -1.5], abs=0.06)
    raw = 1 / (1 + np.exp(-z))
    calibrated = scaling.apply_to_probabilities(raw)
    assert expected_calibration_error(raw, y) > 0.15
    assert expected_calibration_error(calibrated, y) < 0.02
    # monotone per label: the ranking (hence AUROC) is unchanged
    for c in range(2):
        assert (np.argsort(calibrated[:, c], kind="stable") == np.argsort(raw[:, c], kind="stable")).all()


def test_a_label_with_one_class_keeps_the_identity():
    z, y = _shifted_problem(n=500)
    y[:, 1] = 0.0
    scaling = fit_platt_scaling(z, y, ["a", "b"])
    assert scaling.scale[1] == 1.0 and scaling.bias[1] == 0.0
    assert scaling.details["identity_labels"] == ["b"]
    assert scaling.scale[0] != 1.0


def test_probability_logits_inverts_the_sigmoid_and_survives_saturation():
    z = np.array([[-3.0, 0.0, 4.0]])
    assert probability_logits(1 / (1 + np.exp(-z))) == pytest.approx(z, abs=1e-6)
    assert np.isfinite(probability_logits(np.array([[0.0, 1.0]]))).all()


def test_save_load_round_trip_and_bad_files(tmp_path):
    scaling = PlattScaling(["a", "b"], [1.5, 0.7], [-1.0, 0.2], {"method": "platt"})
    scaling.save(tmp_path / "c.json")
    assert PlattScaling.load(tmp_path / "c.json") == scaling
    (tmp_path / "bad.json").write_text(json.dumps({"labels": ["a"], "scale": [-1.0], "bias": [0.0]}))
    with pytest.raises(ValueError, match="positive"):
        PlattScaling.load(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps({"labels": ["a", "b"], "scale": [1.0], "bias": [0.0]}))
    with pytest.raises(ValueError, match="length"):
        PlattScaling.load(tmp_path / "short.json")


def test_a_label_without_signal_keeps_its_ranking_at_the_scale_floor():
    z, y = _shifted_problem(n=2000)
    z[:, 1] = -z[:, 1]  # scores anti-correlated with the truth: the best monotone fit is flat
    scaling = fit_platt_scaling(z, y, ["a", "b"])
    assert scaling.scale[1] == pytest.approx(MIN_SCALE)
    assert scaling.details["at_scale_floor"] == ["b"]
    calibrated = scaling.apply_to_probabilities(1 / (1 + np.exp(-z)))
    assert len(np.unique(calibrated[:, 1])) == len(np.unique(z[:, 1]))  # no ties introduced
