"""Post-hoc Platt scaling: the fit on known cases, the model hook, and `medmodal calibrate` end to end."""

import json
import shutil

import numpy as np
import pytest
import torch

from medmodal.evaluation.calibration import (
    CALIBRATION_FILE,
    PlattScaling,
    calibrate_run,
    fit_platt_scaling,
    probability_logits,
)
from medmodal.evaluation.metrics import expected_calibration_error


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


def test_calibrate_run_end_to_end(tiny_run, tiny_data, tmp_path):
    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.serving.predictor import Predictor
    from medmodal.training.loading import load_trained

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # the session's tiny run stays uncalibrated
    before = evaluate_run(run, tiny_data, split="test", max_tokens=5, progress=False)
    scaling = calibrate_run(run, tiny_data, fit_split="val", eval_split="test")
    assert (run / CALIBRATION_FILE).exists()
    for split in ("val", "test"):
        details = scaling.details[split]
        assert 0.0 <= details["ece_after"] <= 1.0 and details["n_studies"] > 0
    # on the split it was fitted on, Platt scaling (which includes the identity) cannot be worse
    # by much than the raw probabilities; the held-out split is reported, not asserted
    assert scaling.details["val"]["ece_after"] <= scaling.details["val"]["ece_before"] + 0.02

    trained = load_trained(run)
    assert trained.calibrated
    assert torch.allclose(trained.model.calibration_scale, torch.tensor(scaling.scale, dtype=torch.float32))
    after = evaluate_run(run, tiny_data, split="test", max_tokens=5, progress=False)
    assert after["classification"]["calibrated"] and not before["classification"]["calibrated"]
    assert after["classification"]["auroc_macro"] == pytest.approx(before["classification"]["auroc_macro"], abs=1e-6)
    assert after["classification"]["ece"] == pytest.approx(scaling.details["test"]["ece_after"], abs=1e-4)
    assert not load_trained(run, apply_calibration=False).calibrated

    image = next((tiny_data / "images").glob("*.png"))
    assert Predictor(trained).predict(image=image)["calibrated"] is True


def test_a_label_without_signal_keeps_its_ranking_at_the_scale_floor():
    from medmodal.evaluation.calibration import MIN_SCALE

    z, y = _shifted_problem(n=2000)
    z[:, 1] = -z[:, 1]  # scores anti-correlated with the truth: the best monotone fit is flat
    scaling = fit_platt_scaling(z, y, ["a", "b"])
    assert scaling.scale[1] == pytest.approx(MIN_SCALE)
    assert scaling.details["at_scale_floor"] == ["b"]
    calibrated = scaling.apply_to_probabilities(1 / (1 + np.exp(-z)))
    assert len(np.unique(calibrated[:, 1])) == len(np.unique(z[:, 1]))  # no ties introduced


def test_tuned_thresholds_are_stored_and_used_by_evaluate_and_predict(tiny_run, tiny_data, tmp_path):
    from medmodal.evaluation.evaluate import evaluate_run
    from medmodal.serving.predictor import Predictor
    from medmodal.training.loading import load_trained

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    scaling = calibrate_run(run, tiny_data, thresholds="best_f1")
    assert scaling.thresholds is not None and len(scaling.thresholds) == len(scaling.labels)
    assert "f1_macro_tuned_thresholds" in scaling.details["val"]
    trained = load_trained(run)
    assert trained.decision_thresholds() == pytest.approx(scaling.thresholds)
    metrics = evaluate_run(run, tiny_data, split="test", max_tokens=5, progress=False)
    used = [row["threshold"] for row in metrics["classification"]["per_label"].values()]
    assert used == pytest.approx(scaling.thresholds)
    result = Predictor(trained).predict(image=next((tiny_data / "images").glob("*.png")))
    assert result["threshold"] == pytest.approx(dict(zip(scaling.labels, scaling.thresholds)))
    assert result["predicted"] == [n for n, t in zip(scaling.labels, scaling.thresholds) if result["labels"][n] >= t]
    with pytest.raises(ValueError, match="best_f1"):
        calibrate_run(run, tiny_data, thresholds="youden")
