"""Peak evidence (model.localization.peak_evidence): fitted on validation when training ends, after the
box head's refit and before the report bank, kept in the checkpoint, and what evaluate and ONNX read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_config

from medmodal.config import ConfigError
from medmodal.data.pipeline import build_dataset, fit_splits, read_dataset
from medmodal.data.types import Box, Study
from medmodal.models.presets import PRESETS
from medmodal.training.checkpoints import read_checkpoint
from medmodal.training.peak_evidence import (
    PEAK_EVIDENCE_FILE,
    PEAK_WEIGHTS,
    boxed_findings,
    fit_peak_evidence,
    macro_auroc,
    validation_scores,
)

# The demo's recipe (stacked regressions, reports by expected reading, a refitted box head, the
# peaks) at the tiny sizes.
EVIDENCE = {
    **PRESETS["stacked_retrieved"],
    "model.wide.pixels": 8,
    "train.localization_refit_epochs": 2,
    "train.epochs": 1,
}


@pytest.fixture(scope="module")
def evidence_run(tiny_data, tmp_path_factory):
    from medmodal.training.trainer import train

    out = tmp_path_factory.mktemp("peak_evidence") / "run"
    train(tiny_data, tiny_config(**EVIDENCE), out)
    return out


def _validation(run, data):
    from medmodal.training.loading import load_trained

    loaded = load_trained(run)
    config = tiny_config(**EVIDENCE)
    _, val_studies = fit_splits(read_dataset(data, config))
    return loaded, build_dataset(val_studies, loaded.tokenizer, loaded.labels, config, train=False)


def test_the_stored_weight_is_the_first_best_on_validation_and_evaluate_scores_it(evidence_run, tiny_data):
    from medmodal.evaluation.evaluate import evaluate_run

    chosen = json.loads((evidence_run / PEAK_EVIDENCE_FILE).read_text())
    weights = read_checkpoint(evidence_run / "checkpoints" / "best.ckpt")["state_dict"]
    assert float(weights["model.peak_evidence.weight"]) == chosen["weight"]
    by_weight = {float(w): s for w, s in chosen["val_auroc_macro_by_weight"].items()}
    assert list(by_weight) == list(PEAK_WEIGHTS)
    assert chosen["weight"] == next(w for w, s in by_weight.items() if s == max(by_weight.values()))
    # Fitting again from the stored weights' validation scores gives the same values.
    loaded, validation = _validation(evidence_run, tiny_data)
    scores = validation_scores(loaded.model, validation, batch_size=8)
    again = fit_peak_evidence(loaded.model, *scores, list(chosen["boxed"].values()), loaded.labels)
    assert again["weight"] == chosen["weight"] and again["scale"] == chosen["scale"]
    # evaluate's forward applies exactly what was chosen
    metrics = evaluate_run(evidence_run, tiny_data, split="val")
    assert metrics["classification"]["auroc_macro"] == pytest.approx(by_weight[chosen["weight"]], abs=1e-4)


def _set_evidence(model, weight: float = 0.5) -> None:
    """A non-zero weight, whatever the tiny run chose, so that the peaks count."""
    n = model.num_labels
    model.peak_evidence.set(
        weight, torch.full((n,), 2.0), torch.full((n,), -1.0), torch.ones(n, dtype=torch.bool)
    )


def test_the_report_bank_reads_the_mixed_probabilities(evidence_run, tiny_data):
    from medmodal.data.dataset import make_dataloader

    loaded, validation = _validation(evidence_run, tiny_data)
    model = loaded.model.eval()
    _set_evidence(model)
    logits, peaks, _, seen = validation_scores(model, validation, batch_size=len(validation))
    batch = next(iter(make_dataloader(validation, batch_size=len(validation), shuffle=False)))
    probs, _ = model.retrieval_inputs(batch)
    expected = torch.sigmoid(model.peak_evidence.mix(logits, peaks, seen)).float()
    assert torch.allclose(probs, expected, atol=1e-5)
    assert not torch.allclose(probs, torch.sigmoid(logits).float(), atol=1e-3)


def test_weight_zero_unless_the_peaks_help_on_validation(evidence_run, tiny_data):
    loaded, validation = _validation(evidence_run, tiny_data)
    logits, _, targets, seen = validation_scores(loaded.model, validation, batch_size=8)
    # peaks that carry nothing (a constant): every weight ties or loses, the first (0) is kept
    chosen = fit_peak_evidence(
        loaded.model, logits, torch.zeros_like(logits), targets, seen, [True] * logits.shape[1], loaded.labels
    )
    assert chosen["weight"] == 0.0
    # peaks equal to the labels themselves: the peaks alone rank perfectly
    perfect = fit_peak_evidence(
        loaded.model, logits, targets * 10 - 5, targets, seen, [True] * logits.shape[1], loaded.labels
    )
    assert perfect["val_auroc_macro_by_weight"]["1.0"] == 1.0 and perfect["weight"] > 0
    # no finding with training boxes: nothing to mix
    none = fit_peak_evidence(
        loaded.model, logits, targets * 10 - 5, targets, seen, [False] * logits.shape[1], loaded.labels
    )
    assert none["weight"] == 0.0


def test_boxed_findings_are_those_with_a_training_box(tmp_path):
    studies = [
        Study(
            id="a", row=1, image=tmp_path / "a.png", labels=["nodule"], boxes=[Box("nodule", (0, 0, 4, 4))]
        ),
        Study(id="b", row=2, image=tmp_path / "b.png", labels=["edema"]),
    ]
    assert boxed_findings(studies, ["edema", "nodule", "effusion"]) == [False, True, False]


def test_macro_auroc_skips_labels_with_one_class():
    targets = np.array([[1, 1], [0, 1], [1, 1], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.2, 0.2], [0.8, 0.3], [0.1, 0.4]])
    assert macro_auroc(targets, scores) == 1.0
    assert macro_auroc(np.ones((3, 2)), scores[:3]) is None


def test_peak_evidence_is_refused_on_prepared_data():
    from types import SimpleNamespace

    from medmodal.training.prepared_training import check_prepared_config

    config = tiny_config(**{"model.localization.peak_evidence": True})
    index = SimpleNamespace(root="prepared", image_size=config.data.image_size, label_names=[])
    with pytest.raises(ConfigError, match="model.localization.peak_evidence"):
        check_prepared_config(index, config)  # type: ignore[arg-type]


def test_the_onnx_graph_computes_what_the_model_does(evidence_run, tmp_path):
    """The exported graph includes the stacked regressions and the peaks (it once left both out)."""
    import shutil

    from medmodal.serving.onnx_export import OnnxSession, export_onnx, parity_batch
    from medmodal.training.checkpoints import write_checkpoint_atomic
    from medmodal.training.loading import load_trained

    run = tmp_path / "run"
    shutil.copytree(evidence_run, run)
    state = read_checkpoint(run / "checkpoints" / "best.ckpt")
    state["state_dict"]["model.peak_evidence.weight"] = torch.tensor(
        0.5
    )  # the peaks count, whatever was chosen
    write_checkpoint_atomic(state, run / "checkpoints" / "best.ckpt")
    exported = export_onnx(run, tmp_path / "model.onnx")
    trained = load_trained(run)
    batch = parity_batch(trained, 6)
    with torch.no_grad():
        model = trained.model.eval()
        want = torch.sigmoid(model(batch).logits).numpy()
        assert model.peak_evidence is not None and float(model.peak_evidence.weight) == 0.5
    got = OnnxSession(exported.path).run(batch)["probabilities"]
    assert np.abs(got - want).max() < 1e-4
