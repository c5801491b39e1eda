"""VQA task: batching, accuracy and baseline on known cases, a tiny end-to-end run (network: tests/models)."""

from __future__ import annotations

import json

import pytest

from medmodal.cli.main import main
from medmodal.data.qa import QARecord
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.tasks.vqa import (
    VQADataset,
    answer_vocabulary,
    collate_questions,
    majority_baseline,
    vqa_accuracy,
)


def test_accuracy_closed_open_and_per_type():
    records = [
        QARecord("a", "q", "yes", "closed", "presence"),
        QARecord("a", "q", "no", "closed", "presence"),
        QARecord("b", "q", "left", "closed", "laterality"),
        QARecord("b", "q", "small", "open", "size"),
    ]
    metrics = vqa_accuracy(["yes", "yes", "left", "large"], records)
    assert metrics["accuracy"] == 0.5
    assert metrics["closed_accuracy"] == pytest.approx(2 / 3)
    assert metrics["open_accuracy"] == 0.0
    assert (metrics["n_closed"], metrics["n_open"]) == (3, 1)
    assert metrics["per_question_type"]["presence"] == {"accuracy": 0.5, "n": 2}
    assert vqa_accuracy([], [])["accuracy"] is None
    with pytest.raises(ValueError):
        vqa_accuracy(["yes"], records)


def test_majority_baseline_uses_each_types_most_frequent_training_answer():
    train = (
        [QARecord("a", "q", "no", "closed", "presence")] * 3
        + [QARecord("a", "q", "yes", "closed", "presence")]
        + [QARecord("a", "q", "small", "open", "size"), QARecord("a", "q", "large", "open", "size")]
    )
    test = [
        QARecord("b", "q", "yes", "closed", "presence"),
        QARecord("b", "q", "small", "open", "size"),
        QARecord("b", "q", "right", "closed", "laterality"),
    ]
    assert majority_baseline(train, test) == [
        "no",
        "large",
        "no",
    ]  # tie -> alphabetical; unseen type -> overall
    assert answer_vocabulary(train) == ["no", "large", "small", "yes"]


def test_dataset_groups_questions_by_study_and_collates(tmp_path):
    import numpy as np
    from PIL import Image

    studies = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20), 50 * (i + 1), np.uint8)).save(path)
        studies.append(Study(id=f"s{i}", row=i + 2, image=path))
    records = [
        QARecord("s0", "is there a nodule?", "yes", "closed"),
        QARecord("s1", "which side?", "left", "closed"),
        QARecord("s0", "how large?", "unseen", "open"),
    ]
    tokenizer = ReportTokenizer.train([r.question for r in records], min_freq=1)
    dataset = VQADataset(
        [(r, studies[int(r.study_id[1])]) for r in records], tokenizer, ["yes", "left"], 16, 8
    )
    assert len(dataset) == 2
    batch = collate_questions([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 1, 16, 16)
    assert batch["question_ids"].shape == (3, 8)
    assert batch["image_index"].tolist() == [0, 0, 1]
    assert batch["question_index"].tolist() == [0, 2, 1]
    assert batch["answer"].tolist() == [0, -1, 1]  # "unseen" is outside the vocabulary


@pytest.mark.slow
def test_train_and_evaluate_end_to_end(tiny_data, tmp_path):
    config = tmp_path / "vqa.yaml"
    config.write_text(
        "embed_dim: 16\nimage_encoder:\n  name: small_cnn\n  kwargs: {widths: [8, 16], stem_width: 8}\n"
    )
    run = tmp_path / "run"
    args = [
        "vqa",
        "train",
        "--data",
        str(tiny_data),
        "--out",
        str(run),
        "--config",
        str(config),
        "--no-progress",
    ]
    assert main(["-q", *args, "--epochs", "2"]) == 0
    assert (run / "checkpoints" / "best.ckpt").exists() and (run / "logs" / "csv" / "metrics.csv").exists()
    done = json.loads((run / "training_done.json").read_text())
    assert done["epochs_run"] == 2 and done["monitor"] == "val/accuracy"
    assert main(["-q", *args, "--epochs", "2"]) == 0  # finished: nothing to do
    assert main(["-q", *args, "--epochs", "3"]) == 2  # another config in the same run folder is refused
    (run / "metrics.json").write_text(json.dumps({"classification": {"auroc_macro": 0.9}}))
    assert main(["-q", "vqa", "evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classification"] == {"auroc_macro": 0.9}  # other keys are kept
    vqa = metrics["vqa"]
    assert 0.0 <= vqa["closed_accuracy"] <= 1.0 and 0.0 <= vqa["open_accuracy"] <= 1.0
    assert vqa["n"] == vqa["n_closed"] + vqa["n_open"] > 0
    assert 0.0 <= vqa["baseline_majority"]["accuracy"] <= 1.0
    predictions = (run / "predictions" / "test.jsonl").read_text().splitlines()
    assert len(predictions) == vqa["n"]
    assert sum(json.loads(line)["correct"] for line in predictions) == round(vqa["accuracy"] * vqa["n"])
