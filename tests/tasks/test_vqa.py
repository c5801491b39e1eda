"""VQA: model shapes and gradient flow, batching, accuracy and baseline on known cases, a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from medmodal.cli.main import main
from medmodal.data.qa import QARecord
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.tasks.config import VQAConfig, with_overrides
from medmodal.tasks.vqa import (
    VQADataset,
    VQAModel,
    answer_vocabulary,
    collate_questions,
    majority_baseline,
    vqa_accuracy,
)

SMALL = {"embed_dim": 16, "image_encoder.kwargs": {"widths": [8, 16], "stem_width": 8}}


@pytest.mark.parametrize("fusion", ["concat", "cross_attention"])
def test_model_shapes_and_gradients_reach_every_part(fusion):
    torch.manual_seed(0)
    config = with_overrides(VQAConfig(), {**SMALL, "fusion.name": fusion})
    model = VQAModel(config, vocab_size=30, pad_id=0, num_answers=7)
    image = torch.randn(2, 1, 32, 32)
    ids = torch.randint(5, 30, (5, 6))
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[1, 3:] = False
    image_index = torch.tensor([0, 0, 1, 1, 1])
    logits = model(image, ids, mask, image_index)
    assert logits.shape == (5, 7)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3, 4])).backward()
    for part in (model.image_encoder, model.question_encoder, model.fusion, model.classifier):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), type(part).__name__


def test_question_only_model_ignores_the_image():
    torch.manual_seed(0)
    model = VQAModel(with_overrides(VQAConfig(), {**SMALL, "use_image": False}), 30, 0, 4).eval()
    ids, mask = torch.randint(5, 30, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    a = model(torch.randn(2, 1, 32, 32), ids, mask)
    b = model(torch.randn(2, 1, 32, 32), ids, mask)
    assert torch.allclose(a, b)
    seeing = VQAModel(with_overrides(VQAConfig(), SMALL), 30, 0, 4).eval()
    assert not torch.allclose(seeing(torch.randn(2, 1, 32, 32), ids, mask), seeing(torch.randn(2, 1, 32, 32), ids, mask))


def test_accuracy_closed_open_and_per_type():
    records = [QARecord("a", "q", "yes", "closed", "presence"), QARecord("a", "q", "no", "closed", "presence"),
               QARecord("b", "q", "left", "closed", "laterality"), QARecord("b", "q", "small", "open", "size")]
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
    train = [QARecord("a", "q", "no", "closed", "presence")] * 3 + [QARecord("a", "q", "yes", "closed", "presence")] \
        + [QARecord("a", "q", "small", "open", "size"), QARecord("a", "q", "large", "open", "size")]
    test = [QARecord("b", "q", "yes", "closed", "presence"), QARecord("b", "q", "small", "open", "size"),
            QARecord("b", "q", "right", "closed", "laterality")]
    assert majority_baseline(train, test) == ["no", "large", "no"]  # tie -> alphabetical; unseen type -> overall
    assert answer_vocabulary(train) == ["no", "large", "small", "yes"]


def test_dataset_groups_questions_by_study_and_collates(tmp_path):
    import numpy as np
    from PIL import Image

    studies = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 20), 50 * (i + 1), np.uint8)).save(path)
        studies.append(Study(id=f"s{i}", row=i + 2, image=path))
    records = [QARecord("s0", "is there a nodule?", "yes", "closed"), QARecord("s1", "which side?", "left", "closed"),
               QARecord("s0", "how large?", "unseen", "open")]
    tokenizer = ReportTokenizer.train([r.question for r in records], min_freq=1)
    dataset = VQADataset([(r, studies[int(r.study_id[1])]) for r in records], tokenizer, ["yes", "left"], 16, 8)
    assert len(dataset) == 2
    batch = collate_questions([dataset[0], dataset[1]])
    assert batch["image"].shape == (2, 1, 16, 16)
    assert batch["question_ids"].shape == (3, 8)
    assert batch["image_index"].tolist() == [0, 0, 1]
    assert batch["question_index"].tolist() == [0, 2, 1]
    assert batch["answer"].tolist() == [0, -1, 1]  # "unseen" is outside the vocabulary


def test_train_and_evaluate_end_to_end(tiny_data, tmp_path):
    config = tmp_path / "vqa.yaml"
    config.write_text("embed_dim: 16\nimage_encoder:\n  name: small_cnn\n  kwargs: {widths: [8, 16], stem_width: 8}\n")
    run = tmp_path / "run"
    args = ["vqa", "train", "--data", str(tiny_data), "--out", str(run), "--config", str(config), "--epochs", "2"]
    assert main(["-q", *args]) == 0
    assert (run / "vqa" / "model.pt").exists()
    assert main(["-q", *args]) == 2  # refuses to overwrite without --force
    (run / "metrics.json").write_text(json.dumps({"classification": {"auroc_macro": 0.9}}))
    assert main(["-q", "vqa", "evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["classification"] == {"auroc_macro": 0.9}  # other tasks' metrics are kept
    vqa = metrics["vqa"]
    assert 0.0 <= vqa["closed_accuracy"] <= 1.0 and 0.0 <= vqa["open_accuracy"] <= 1.0
    assert vqa["n"] == vqa["n_closed"] + vqa["n_open"] > 0
    assert 0.0 <= vqa["baseline_majority"]["accuracy"] <= 1.0
    predictions = (run / "vqa" / "predictions_test.jsonl").read_text().splitlines()
    assert len(predictions) == vqa["n"]
    assert sum(json.loads(line)["correct"] for line in predictions) == round(vqa["accuracy"] * vqa["n"])
