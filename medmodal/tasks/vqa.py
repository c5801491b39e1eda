"""Visual question answering: answer a question about a study's image by classifying over the training answers.

The model (:class:`VQAModel`) is built from registry parts: an image encoder
(``small_cnn``, MONAI backbones), a question encoder (any text encoder,
e.g. ``bilstm_attention``), a fusion layer (``concat``, ``gated``, ``bilinear``,
``cross_attention``; the question plays the text's role) and an MLP classifier
over the answer vocabulary, the distinct answers of the training questions (the
usual VQA-RAD formulation; a test answer never seen in training is always
scored wrong). Closed and open questions share the classifier.

Data: a dataset folder (manifest + images) and its ``qa.jsonl``
(:mod:`medmodal.data.qa`; the synthetic generator writes one, the VQA-RAD
importer too). A question's split is its own ``split`` field, else its study's.

Metrics (:func:`vqa_accuracy`): exact-match accuracy of the normalised answer,
overall, on closed and on open questions and per question type, next to the
majority-answer baseline (the most frequent training answer of the question's
type) on the same questions.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from medmodal.data.dataset import StudyDataset, normalize_image, pad_ids
from medmodal.data.manifest import Manifest
from medmodal.data.qa import QARecord, read_qa
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.models import registry
from medmodal.models.layers import mlp
from medmodal.models.pretrained import load_pretrained
from medmodal.models.types import ImageFeatures
from medmodal.runs import write_json_atomic
from medmodal.tasks.common import FitResult, TaskDir, fit, merge_metrics, read_task_manifest, seeded_generator
from medmodal.tasks.config import VQAConfig, load_task_config, save_task_config

log = logging.getLogger(__name__)

TASK = "vqa"
UNKNOWN_ANSWER = -1  # target of an answer outside the training vocabulary (ignored by the loss)


# --------------------------------------------------------------------------- model
class VQAModel(nn.Module):
    """image [B,1,H,W] + question ids [B,L] -> answer logits [B, A].

    Args:
        config: the parts (by registry name), widths and ``use_image``.
        vocab_size, pad_id: of the question tokenizer.
        num_answers: A, the size of the answer vocabulary.
    """

    def __init__(self, config: VQAConfig, vocab_size: int, pad_id: int, num_answers: int) -> None:
        super().__init__()
        if num_answers < 1:
            raise ValueError("the answer vocabulary is empty")
        dim = config.embed_dim
        self.use_image = config.use_image
        self.image_encoder = registry.create(
            "image_encoder", config.image_encoder.name, in_channels=1, out_dim=dim, **config.image_encoder.kwargs
        )
        self.question_encoder = registry.create(
            "text_encoder", config.question_encoder.name, vocab_size=vocab_size, out_dim=dim, pad_id=pad_id,
            **config.question_encoder.kwargs,
        )
        self.fusion = registry.create(
            "fusion", config.fusion.name, image_dim=self.image_encoder.out_dim, text_dim=self.question_encoder.out_dim,
            grid_dim=self.image_encoder.grid_dim, seq_dim=self.question_encoder.seq_dim, out_dim=dim,
            num_labels=num_answers, **config.fusion.kwargs,
        )
        self.classifier = mlp(self.fusion.out_dim, dim, num_answers, config.dropout)
        for part, module in (("image_encoder", self.image_encoder), ("question_encoder", self.question_encoder)):
            path = getattr(config, part).pretrained_path
            if path:
                load_pretrained(module, path)

    def forward(self, image: Tensor, question_ids: Tensor, question_mask: Tensor, image_index: Tensor | None = None) -> Tensor:
        """Answer logits [N, A].

        Args:
            image: [B,1,H,W].
            question_ids, question_mask: [N,L] long / bool.
            image_index: [N] long, the image each question is about; None = question i is
                about image i (N = B).
        """
        if not self.use_image:  # question-only baseline: the same network sees a blank image
            image = torch.zeros_like(image)
        features = self.image_encoder(image)
        if image_index is not None:
            features = ImageFeatures(features.vector[image_index], features.grid[image_index])
        fused = self.fusion(features, self.question_encoder(question_ids, question_mask))
        return self.classifier(fused.vector)


# ---------------------------------------------------------------------------- data
@dataclass
class VQAData:
    """Questions joined to their studies, per split."""

    manifest: Manifest
    questions: dict[str, list[tuple[QARecord, Study]]]

    def split(self, name: str) -> list[tuple[QARecord, Study]]:
        return self.questions.get(name, [])


def load_vqa_data(data: str | Path, qa_file: str = "qa.jsonl") -> VQAData:
    """Read the manifest and the QA file of ``data`` and join them by study id.

    Questions about a study that is not in the (validated) manifest are dropped
    with a warning; if none is left, a ValueError says so.
    """
    manifest = read_task_manifest(data)
    qa_path = Path(data) / qa_file if Path(data).is_dir() else manifest.path.parent / qa_file
    records = read_qa(qa_path)
    studies = {s.id: s for s in manifest.studies}
    unknown = Counter(r.study_id for r in records if r.study_id not in studies)
    if unknown:
        log.warning("%s: %d question(s) about %d study id(s) not in the manifest are left out (e.g. %s)",
                    qa_path, sum(unknown.values()), len(unknown), ", ".join(list(unknown)[:5]))
    questions: dict[str, list[tuple[QARecord, Study]]] = defaultdict(list)
    for record in records:
        study = studies.get(record.study_id)
        if study is not None:
            questions[record.split or study.split or "train"].append((record, study))
    if not questions:
        raise ValueError(f"{qa_path}: no question refers to a study of {manifest.path}")
    return VQAData(manifest, dict(questions))


def answer_vocabulary(records: Sequence[QARecord]) -> list[str]:
    """Distinct answers, most frequent first (ties alphabetical)."""
    counts = Counter(r.answer for r in records)
    return sorted(counts, key=lambda answer: (-counts[answer], answer))


class VQADataset(Dataset):
    """One item per *study* with all its questions, so each image is encoded once per batch.

    Item: ``image`` [1,S,S], ``question_ids`` [Q,L], ``question_mask`` [Q,L], ``answer`` [Q]
    (long, :data:`UNKNOWN_ANSWER` outside the vocabulary), ``question_index`` [Q] (positions
    in :attr:`records`). :func:`collate_questions` stacks the images to [B,1,S,S] and
    concatenates the questions to [N,...] with ``image_index`` [N] naming each one's image.
    """

    def __init__(
        self,
        questions: Sequence[tuple[QARecord, Study]],
        tokenizer: ReportTokenizer,
        answers: Sequence[str],
        image_size: int,
        max_question_tokens: int,
    ) -> None:
        self.records = [record for record, _ in questions]
        studies = list({study.id: study for _, study in questions}.values())
        position = {study.id: i for i, study in enumerate(studies)}
        self.questions_of: list[list[int]] = [[] for _ in studies]
        for index, record in enumerate(self.records):
            self.questions_of[position[record.study_id]].append(index)
        # StudyDataset decodes, resizes and caches each image once (uint8).
        self.images = StudyDataset(studies, tokenizer, [], image_size=image_size, cache_images=True)
        self.tokenizer = tokenizer
        self.answer_index = {answer: i for i, answer in enumerate(answers)}
        self.max_question_tokens = max_question_tokens
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.questions_of)

    def __getitem__(self, index: int) -> dict[str, Any]:
        stored = self.images.stored_image(index)
        if stored is None:
            image = torch.zeros(1, self.image_size, self.image_size)
        else:
            image = normalize_image(stored[0].float() / 255.0)
        ids, masks, answers = [], [], []
        for q in self.questions_of[index]:
            record = self.records[q]
            encoded = self.tokenizer.encode(record.question, self.max_question_tokens)
            question_ids, question_mask = pad_ids(encoded, self.max_question_tokens, self.tokenizer.pad_id)
            ids.append(question_ids)
            masks.append(question_mask)
            answers.append(self.answer_index.get(record.answer, UNKNOWN_ANSWER))
        return {
            "image": image,
            "question_ids": torch.stack(ids),
            "question_mask": torch.stack(masks),
            "answer": torch.tensor(answers, dtype=torch.long),
            "question_index": torch.tensor(self.questions_of[index], dtype=torch.long),
        }


def collate_questions(items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
    """Study items -> ``image`` [B,1,S,S]; the questions concatenated to [N,...]; ``image_index`` [N]."""
    batch = {"image": torch.stack([item["image"] for item in items])}
    for key in ("question_ids", "question_mask", "answer", "question_index"):
        batch[key] = torch.cat([item[key] for item in items])
    batch["image_index"] = torch.cat(
        [torch.full((len(item["answer"]),), i, dtype=torch.long) for i, item in enumerate(items)]
    )
    return batch


def make_loader(dataset: VQADataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches of ``batch_size`` studies (all their questions)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_questions,
                      generator=seeded_generator(seed) if shuffle else None)


# ------------------------------------------------------------------------- metrics
def vqa_accuracy(predicted: Sequence[str], records: Sequence[QARecord]) -> dict[str, Any]:
    """Exact-match accuracy of normalised answers: overall, ``closed``, ``open``, per question type.

    Returns ``{"accuracy", "closed_accuracy", "open_accuracy", "n", "n_closed", "n_open",
    "per_question_type": {type: {"accuracy", "n"}}}``; an accuracy over no question is None.
    """
    if len(predicted) != len(records):
        raise ValueError(f"{len(predicted)} predictions for {len(records)} questions")
    hits = [p == r.answer for p, r in zip(predicted, records)]

    def mean(selection: list[bool]) -> float | None:
        return sum(selection) / len(selection) if selection else None

    by_type: dict[str, list[bool]] = defaultdict(list)
    for hit, record in zip(hits, records):
        by_type[record.question_type or "(none)"].append(hit)
    closed = [h for h, r in zip(hits, records) if r.answer_type == "closed"]
    open_ = [h for h, r in zip(hits, records) if r.answer_type == "open"]
    return {
        "accuracy": mean(hits),
        "closed_accuracy": mean(closed),
        "open_accuracy": mean(open_),
        "n": len(hits),
        "n_closed": len(closed),
        "n_open": len(open_),
        "per_question_type": {t: {"accuracy": mean(h), "n": len(h)} for t, h in sorted(by_type.items())},
    }


def majority_answers(train_records: Sequence[QARecord]) -> tuple[dict[str, str], str]:
    """The most frequent training answer per question type (ties alphabetical), and overall."""
    by_type: dict[str, list[QARecord]] = defaultdict(list)
    for record in train_records:
        by_type[record.question_type].append(record)
    per_type = {t: answer_vocabulary(rs)[0] for t, rs in by_type.items()}
    return per_type, answer_vocabulary(train_records)[0]


def majority_baseline(train_records: Sequence[QARecord], records: Sequence[QARecord]) -> list[str]:
    """Majority-answer predictions for ``records``: their type's most frequent training answer."""
    per_type, overall = majority_answers(train_records)
    return [per_type.get(r.question_type, overall) for r in records]


# ------------------------------------------------------------------- train / evaluate
def train_vqa(data: str | Path, out: str | Path, config: VQAConfig | None = None, *, force: bool = False) -> FitResult:
    """Train a VQA model on ``data``'s training questions; writes ``out/vqa/`` (see :mod:`medmodal.tasks.common`)."""
    config = config or VQAConfig()
    task_dir = TaskDir.at(out, TASK)
    task_dir.prepare(force)
    vqa_data = load_vqa_data(data, config.qa_file)
    train_questions = vqa_data.split("train")
    if not train_questions:
        raise ValueError(f"{data}: no training question")
    tokenizer = ReportTokenizer.train([r.question for r, _ in train_questions], min_freq=config.min_token_freq)
    answers = answer_vocabulary([r for r, _ in train_questions])
    torch.manual_seed(config.train.seed)
    model = VQAModel(config, tokenizer.vocab_size, tokenizer.pad_id, len(answers))

    def dataset(questions):
        return VQADataset(questions, tokenizer, answers, config.image_size, config.max_question_tokens)

    train_loader = make_loader(dataset(train_questions), config.train.batch_size, shuffle=True, seed=config.train.seed)
    val_questions = vqa_data.split("val")
    val_loader = make_loader(dataset(val_questions), 64, shuffle=False) if val_questions else None

    def loss_of(batch: dict) -> Tensor:
        logits = model(batch["image"], batch["question_ids"], batch["question_mask"], batch["image_index"])
        return F.cross_entropy(logits, batch["answer"], ignore_index=UNKNOWN_ANSWER)

    def validation_accuracy() -> float | None:
        if val_loader is None:
            return None
        predicted = predict_answers(model, val_loader, answers)
        return vqa_accuracy(predicted, val_loader.dataset.records)["accuracy"]

    result = fit(model, train_loader, loss_of, validation_accuracy, config.train, task=TASK)
    save_task_config(config, task_dir.config)
    tokenizer.save(task_dir.tokenizer)
    torch.save(model.state_dict(), task_dir.weights)
    write_json_atomic(task_dir.training, {
        "data": str(Path(data).resolve()),
        "answers": answers,
        "questions": {split: len(qs) for split, qs in sorted(vqa_data.questions.items())},
        **result.to_json(),
    })
    return result


@torch.no_grad()
def predict_answers(model: VQAModel, loader: DataLoader, answers: Sequence[str]) -> list[str]:
    """The argmax answer of every question of ``loader``, in ``loader.dataset.records`` order (eval mode)."""
    model.eval()
    predicted: list[str] = [""] * len(loader.dataset.records)
    for batch in loader:
        logits = model(batch["image"], batch["question_ids"], batch["question_mask"], batch["image_index"])
        for position, answer in zip(batch["question_index"].tolist(), logits.argmax(dim=-1).tolist()):
            predicted[position] = answers[answer]
    return predicted


@dataclass
class TrainedVQA:
    model: VQAModel
    config: VQAConfig
    tokenizer: ReportTokenizer
    answers: list[str]
    training: dict[str, Any]


def load_vqa(run: str | Path) -> TrainedVQA:
    """The trained VQA model of a run folder (eval mode, CPU)."""
    task_dir = TaskDir.at(run, TASK)
    task_dir.require_trained()
    config = load_task_config(VQAConfig, task_dir.config)
    tokenizer = ReportTokenizer.load(task_dir.tokenizer)
    training = json.loads(task_dir.training.read_text())
    answers = training["answers"]
    # model.pt holds every weight: build without re-reading the pretrained files it started from.
    skeleton = config.model_copy(update={
        part: getattr(config, part).model_copy(update={"pretrained_path": None})
        for part in ("image_encoder", "question_encoder")
    })
    model = VQAModel(skeleton, tokenizer.vocab_size, tokenizer.pad_id, len(answers))
    model.load_state_dict(torch.load(task_dir.weights, map_location="cpu", weights_only=True))
    model.eval()
    return TrainedVQA(model, config, tokenizer, answers, training)


def evaluate_vqa(run: str | Path, data: str | Path | None = None, *, split: str = "test") -> dict[str, Any]:
    """Score a run's VQA model on ``split``; adds ``vqa`` to the run's metrics file and writes predictions."""
    trained = load_vqa(run)
    data = data or trained.training["data"]
    vqa_data = load_vqa_data(data, trained.config.qa_file)
    questions = vqa_data.split(split)
    if not questions:
        raise ValueError(f"{data}: no question in split '{split}'")
    dataset = VQADataset(questions, trained.tokenizer, trained.answers, trained.config.image_size,
                         trained.config.max_question_tokens)
    predicted = predict_answers(trained.model, make_loader(dataset, 64, shuffle=False), trained.answers)
    records = dataset.records
    train_records = [r for r, _ in vqa_data.split("train")]
    metrics = {
        "split": split,
        "data": str(Path(data).resolve()),
        "use_image": trained.config.use_image,
        "fusion": trained.config.fusion.name,
        **vqa_accuracy(predicted, records),
        "answers_in_vocabulary": sum(r.answer in set(trained.answers) for r in records) / len(records),
        "baseline_majority": _headline(vqa_accuracy(majority_baseline(train_records, records), records)),
    }
    task_dir = TaskDir.at(run, TASK)
    _write_predictions(task_dir.predictions(split), records, predicted)
    merge_metrics(task_dir, split, metrics)
    return metrics


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "closed_accuracy", "open_accuracy", "per_question_type")}


def _write_predictions(path: Path, records: Sequence[QARecord], predicted: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for record, answer in zip(records, predicted):
            row = {**record.to_json(), "predicted": answer, "correct": answer == record.answer}
            handle.write(json.dumps(row) + "\n")


def format_vqa_metrics(metrics: dict[str, Any]) -> str:
    """A small text table: model vs majority baseline, overall / closed / open and per question type."""
    base = metrics["baseline_majority"]

    def cell(value: float | None) -> str:
        return "  n/a " if value is None else f"{value:.3f}"

    lines = [f"split {metrics['split']}: {metrics['n']} questions ({metrics['n_closed']} closed, {metrics['n_open']} open)",
             f"  {'':<22}{'model':>8}{'majority':>10}"]
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        lines.append(f"  {key:<22}{cell(metrics[key]):>8}{cell(base[key]):>10}")
    for qtype, row in metrics["per_question_type"].items():
        lines.append(f"  {qtype:<22}{cell(row['accuracy']):>8}{cell(base['per_question_type'][qtype]['accuracy']):>10}   (n={row['n']})")
    return "\n".join(lines)
