"""`medmodal calibrate` end to end: fit on a tiny run, applied by evaluate and predict, tuned thresholds."""

import shutil

import pytest
import torch

from medmodal.evaluation.evaluate import evaluate_run
from medmodal.experiments.calibrate import calibrate_run
from medmodal.models.calibration import CALIBRATION_FILE
from medmodal.serving.predictor import Predictor
from medmodal.training.loading import load_trained


@pytest.mark.slow
def test_calibrate_run_end_to_end(tiny_run, tiny_data, tmp_path):
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
    assert after["classification"]["auroc_macro"] == pytest.approx(
        before["classification"]["auroc_macro"], abs=1e-6
    )
    assert after["classification"]["ece"] == pytest.approx(scaling.details["test"]["ece_after"], abs=1e-4)
    assert not load_trained(run, apply_calibration=False).calibrated

    image = next((tiny_data / "images").glob("*.png"))
    assert Predictor(trained).predict(image=image)["calibrated"] is True


@pytest.mark.slow
def test_tuned_thresholds_are_stored_and_used_by_evaluate_and_predict(tiny_run, tiny_data, tmp_path):
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
    assert result["predicted"] == [
        n for n, t in zip(scaling.labels, scaling.thresholds) if result["labels"][n] >= t
    ]
    with pytest.raises(ValueError, match="best_f1"):
        calibrate_run(run, tiny_data, thresholds="youden")
