"""Retrieved reports (report_conditioning.reports: retrieved): the bank is filled from the best
checkpoint when training ends, travels in the checkpoint, and evaluation writes training reports."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from medmodal.config import ConfigError
from medmodal.data.pipeline import build_dataset, fit_splits, read_dataset
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.training.checkpoints import read_checkpoint

RETRIEVED = {
    "model.heads.generation": True,
    "model.heads.localization": False,
    "model.report_conditioning.reports": "retrieved",
    "model.report_conditioning.threshold": "val_micro_f1",
    "train.epochs": 1,
}


@pytest.fixture(scope="module")
def retrieved_run(tiny_data, tmp_path_factory):
    from medmodal.training.trainer import train

    out = tmp_path_factory.mktemp("retrieved") / "run"
    train(tiny_data, tiny_config(**RETRIEVED), out)
    return out


def _training_reports(run, data) -> tuple[list[str], torch.Tensor]:
    """The training split's target texts as the run's tokenizer round-trips them, and their labels."""
    config = tiny_config(**RETRIEVED)
    tokenizer = ReportTokenizer.load(run / "tokenizer.json")
    manifest = read_dataset(data, config)
    train_studies, _ = fit_splits(manifest)
    dataset = build_dataset(train_studies, tokenizer, manifest.label_names, config, train=False)
    items = [dataset[i] for i in range(len(dataset))]
    texts = [tokenizer.decode(item["target_ids"][1:].tolist()) for item in items]
    return texts, torch.stack([item["labels"] for item in items])


def test_the_best_checkpoint_carries_the_training_reports(retrieved_run, tiny_data):
    texts, labels = _training_reports(retrieved_run, tiny_data)
    weights = read_checkpoint(retrieved_run / "checkpoints" / "best.ckpt")["state_dict"]
    ids, findings = weights["model.report_bank.ids"], weights["model.report_bank.findings"]
    assert len(ids) == len(texts)  # every tiny training study has a report
    tokenizer = ReportTokenizer.load(retrieved_run / "tokenizer.json")
    assert [tokenizer.decode(row.tolist()) for row in ids] == texts
    assert torch.equal(findings, labels.bool())
    assert torch.allclose(weights["model.report_bank.keys"].norm(dim=1), torch.ones(len(ids)))


def test_the_bank_keys_are_the_best_weights_joint_vectors(retrieved_run, tiny_data):
    from medmodal.data.dataset import collate
    from medmodal.training.loading import load_trained

    loaded = load_trained(retrieved_run)
    config = tiny_config(**RETRIEVED)
    manifest = read_dataset(tiny_data, config)
    train_studies, _ = fit_splits(manifest)
    dataset = build_dataset(train_studies[:4], loaded.tokenizer, loaded.labels, config, train=False)
    vectors = loaded.model.joint_vector(collate([dataset[i] for i in range(4)]))
    bank = loaded.model.report_bank
    assert bank is not None and len(bank) > 4
    assert torch.allclose(torch.nn.functional.normalize(vectors, dim=1), bank.keys[:4], atol=1e-5)


@pytest.mark.parametrize("run_fixture", ["retrieved_run", "reading_run"])  # by findings / by expected reading
def test_evaluation_writes_training_reports(run_fixture, tiny_data, request):
    import json

    from medmodal.evaluation.evaluate import evaluate_run

    run = request.getfixturevalue(run_fixture)
    metrics = evaluate_run(run, tiny_data, split="test")
    assert metrics["generation"]["n_reports"] > 0
    texts, _ = _training_reports(run, tiny_data)
    rows = [json.loads(line) for line in (run / "predictions" / "test.jsonl").open()]
    # Each written report is a training report, cut to evaluate.max_generate_tokens like a generated one.
    assert rows and all(
        row["generated"] and any(t.startswith(row["generated"]) for t in texts) for row in rows
    )


def test_resuming_a_finished_fit_refills_the_same_bank(retrieved_run, tiny_data, tmp_path):
    """A run killed after its last epoch but before training_done.json: run again, it fills the same bank."""
    import shutil

    from medmodal.training.trainer import train

    copy = tmp_path / "run"
    shutil.copytree(retrieved_run, copy)
    (copy / "training_done.json").unlink()
    best = copy / "checkpoints" / "best.ckpt"
    state = read_checkpoint(best)
    before = dict(state["state_dict"])
    for name in ("ids", "findings", "keys"):  # the checkpoint as it was before the fill replaced it
        state["state_dict"][f"model.report_bank.{name}"] = before[f"model.report_bank.{name}"][:0]
    torch.save(state, best)
    train(tiny_data, tiny_config(**RETRIEVED), copy)
    after = read_checkpoint(copy / "checkpoints" / "best.ckpt")["state_dict"]
    for name in ("ids", "findings", "keys"):
        assert torch.equal(before[f"model.report_bank.{name}"], after[f"model.report_bank.{name}"])
    assert (copy / "training_done.json").exists()


def test_retrieved_reports_are_refused_on_prepared_data():
    from types import SimpleNamespace

    from medmodal.training.prepared_training import check_prepared_config

    config = tiny_config(**RETRIEVED)
    index = SimpleNamespace(root="prepared", image_size=config.data.image_size, label_names=[])
    with pytest.raises(ConfigError, match="report_conditioning.reports: retrieved"):
        check_prepared_config(index, config)  # type: ignore[arg-type]


def test_the_bank_skips_studies_without_a_report_and_stops_at_its_capacity(tiny_data):
    import dataclasses

    from medmodal.data.pipeline import vocabulary_texts
    from medmodal.models.multimodal import create_model
    from medmodal.training.report_bank import fill_bank

    config = tiny_config(**{**RETRIEVED, "model.report_conditioning.bank_size": 5})
    manifest = read_dataset(tiny_data, config)
    studies, _ = fit_splits(manifest)
    silent = {studies[0].id, studies[2].id}  # no findings / impression: nothing to retrieve
    studies = [
        dataclasses.replace(s, sections={"indication": s.sections.get("indication", "")})
        if s.id in silent
        else s
        for s in studies[:10]
    ]
    tokenizer = ReportTokenizer.train(vocabulary_texts(studies, config), min_freq=1)
    dataset = build_dataset(studies, tokenizer, manifest.label_names, config, train=False)
    model = create_model(
        config.model,
        vocab_size=tokenizer.vocab_size,
        num_labels=len(manifest.label_names),
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
    ).train()
    fill_bank(model, dataset, batch_size=4)
    assert model.training  # the fill ran in eval mode and gave the mode back
    kept = [i for i, s in enumerate(studies) if s.id not in silent][:5]
    texts = [tokenizer.decode(row.tolist()) for row in model.report_bank.ids]
    assert texts == [tokenizer.decode(dataset[i]["target_ids"][1:].tolist()) for i in kept]


def test_explaining_a_study_of_a_retrieving_model_says_why_it_has_no_sentence_maps(
    retrieved_run, tiny_data, tmp_path
):
    from medmodal.data.manifest import read_manifest
    from medmodal.explain.case import explain_study
    from medmodal.serving.predictor import Predictor
    from medmodal.training.loading import load_trained

    study = read_manifest(tiny_data).studies[0]
    case = explain_study(Predictor(load_trained(retrieved_run)), study.image, "cough", tmp_path / "out")
    assert case["report"] and case["sentences"] == []
    assert "retrieved from the training split" in case["sentence_maps"]
    assert "No sentence maps: the report is retrieved" in (tmp_path / "out" / "case.html").read_text()


BY_READING = {**RETRIEVED, "model.report_conditioning.retrieve_by": "expected_reading"}


@pytest.fixture(scope="module")
def reading_run(tiny_data, tmp_path_factory):
    from medmodal.training.trainer import train

    out = tmp_path_factory.mktemp("by_reading") / "run"
    train(tiny_data, tiny_config(**BY_READING), out)
    return out


def test_an_expected_reading_bank_keeps_the_labelers_reading_and_a_validation_threshold(
    reading_run, tiny_data
):
    from medmodal.labeling import default_labeler, to_binary
    from medmodal.training.loading import load_trained
    from medmodal.training.report_bank import READING_THRESHOLDS, reading_threshold

    texts, _ = _training_reports(reading_run, tiny_data)
    weights = read_checkpoint(reading_run / "checkpoints" / "best.ckpt")["state_dict"]
    labeler = default_labeler()
    expected = to_binary(labeler.label_many(texts), labeler.findings, "positive")
    assert torch.equal(weights["model.report_bank.readings"], torch.as_tensor(expected).bool())
    # The stored t is the one the validation split gives the best weights, again.
    loaded = load_trained(reading_run)
    config = tiny_config(**BY_READING)
    manifest = read_dataset(tiny_data, config)
    _, val_studies = fit_splits(manifest)
    validation = build_dataset(val_studies, loaded.tokenizer, loaded.labels, config, train=False)
    threshold, scores = reading_threshold(loaded.model, validation, batch_size=8)
    assert float(weights["model.report_bank.reading_threshold"]) == pytest.approx(threshold)
    # t is the first candidate with the highest validation F1
    assert [t for t, _ in scores] == list(READING_THRESHOLDS)
    best = max(f for _, f in scores)
    assert threshold == next(t for t, f in scores if f == best)


def test_the_readings_count_an_uncertain_mention_as_asked():
    from medmodal.labeling import default_labeler
    from medmodal.training.report_bank import labeler_readings

    effusion = list(default_labeler().findings).index("effusion")
    texts = [
        "Possible small right pleural effusion.",
        "Small right pleural effusion.",
        "No pleural effusion.",
    ]
    assert labeler_readings(texts, "positive")[:, effusion].tolist() == [1, 1, 0]
    assert labeler_readings(texts, "negative")[:, effusion].tolist() == [0, 1, 0]


def test_the_bank_reads_its_reports_as_evaluate_uncertain_as_says(tiny_data, tmp_path, monkeypatch):
    """training.trainer passes ``evaluate.uncertain_as`` to the fill and the threshold choice."""
    from medmodal.training import report_bank
    from medmodal.training.trainer import train

    asked = []
    real = report_bank.labeler_readings

    def recording(texts, uncertain_as="positive"):
        asked.append(uncertain_as)
        return real(texts, uncertain_as)

    monkeypatch.setattr(report_bank, "labeler_readings", recording)
    train(tiny_data, tiny_config(**BY_READING, **{"evaluate.uncertain_as": "negative"}), tmp_path / "run")
    assert asked and set(asked) == {"negative"}  # the bank's reports and the validation references
