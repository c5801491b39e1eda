"""Visual question answering: answer a question about a study's image by classifying over the training answers.

The network (:class:`medmodal.models.vqa.VQAModel`) is built from registry parts: an image
encoder, a question encoder, a fusion layer and an MLP classifier over the answer vocabulary,
the distinct answers of the training questions (the usual VQA-RAD formulation; a test answer
never seen in training is always scored wrong). Closed and open questions share the classifier.
:class:`VQAModule` trains it with the engine of every medmodal run (:mod:`medmodal.tasks.common`).

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
from torch import Tensor
from torch.utils.data import Dataset

from medmodal.data.dataset import StudyDataset, normalize_image, pad_ids
from medmodal.data.manifest import Manifest
from medmodal.data.qa import QARecord, read_qa
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.models.vqa import VQAModel
from medmodal.tasks import common
from medmodal.tasks.config import VQAConfig
from medmodal.training.engine import PreparedRun, TrainResult

log = logging.getLogger(__name__)

TASK = "vqa"
UNKNOWN_ANSWER = -1  # target of an answer outside the training vocabulary (ignored by the loss)


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
    manifest = common.read_task_manifest(data)
    qa_path = Path(data) / qa_file if Path(data).is_dir() else manifest.path.parent / qa_file
    records = read_qa(qa_path)
    studies = {s.id: s for s in manifest.studies}
    unknown = Counter(r.study_id for r in records if r.study_id not in studies)
    if unknown:
        log.warning(
            "%s: %d question(s) about %d study id(s) not in the manifest are left out (e.g. %s)",
            qa_path,
            sum(unknown.values()),
            len(unknown),
            ", ".join(list(unknown)[:5]),
        )
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


# ------------------------------------------------------------------------ Lightning
def vqa_network(config: VQAConfig, vocab_size: int, pad_id: int, num_answers: int) -> VQAModel:
    """The :class:`VQAModel` that ``config`` describes."""
    return VQAModel(config.image_encoder, config.question_encoder, config.fusion, vocab_size=vocab_size, pad_id=pad_id,
                    num_answers=num_answers, embed_dim=config.embed_dim, dropout=config.dropout,
                    use_image=config.use_image)  # fmt: skip


class VQAModule(common.TaskModule):
    """Trains a :class:`VQAModel` (cross-entropy over the answers, ``labels``); validation accuracy is
    ``val/accuracy``."""

    config_class = VQAConfig
    config: VQAConfig
    monitor = "val/accuracy"

    def build_network(self, vocab_size: int, pad_id: int) -> VQAModel:
        return vqa_network(self.config, vocab_size, pad_id, len(self.labels))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Answer logits [N, A] of a :func:`collate_questions` batch."""
        return self.model(batch["image"], batch["question_ids"], batch["question_mask"], batch["image_index"])

    def _loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits, batch["answer"], ignore_index=UNKNOWN_ANSWER)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(self(batch), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["answer"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, n = self(batch), len(batch["answer"])
        self.log("val/loss", self._loss(logits, batch), batch_size=n, sync_dist=True)
        # the epoch value is the batch-size weighted mean: the accuracy over all validation questions
        hits = (logits.argmax(dim=-1) == batch["answer"]).float().mean()
        self.log(self.monitor, hits, prog_bar=True, batch_size=n, sync_dist=True)


# ------------------------------------------------------------------- train / evaluate
def train_vqa(
    data: str | Path, out: str | Path, config: VQAConfig | None = None, *, force: bool = False
) -> TrainResult:
    """Train a VQA model on ``data``'s training questions into the run folder ``out`` (resumed if unfinished)."""
    config = config or VQAConfig()

    def build(prepared: PreparedRun) -> common.TaskData:
        vqa_data = load_vqa_data(data, config.qa_file)
        train_questions, val_questions = vqa_data.split("train"), vqa_data.split("val")
        if not train_questions or not val_questions:
            raise ValueError(f"{data}: VQA needs training and validation questions, found "
                             f"{len(train_questions)} and {len(val_questions)}")  # fmt: skip
        questions = [r.question for r, _ in train_questions]
        tokenizer = common.run_tokenizer(prepared.run, lambda: questions, config.min_token_freq)
        answers = answer_vocabulary([r for r, _ in train_questions])
        module = VQAModule(config.model_dump(mode="json"), tokenizer.vocab_size, tokenizer.pad_id, answers)

        def dataset(questions):
            return VQADataset(questions, tokenizer, answers, config.image_size, config.max_question_tokens)

        summary = {"data": str(Path(data).resolve()),
                   "questions": {split: len(qs) for split, qs in sorted(vqa_data.questions.items())}}  # fmt: skip
        return common.TaskData(module, dataset(train_questions), dataset(val_questions), tokenizer, answers, summary,
                        collate=collate_questions)  # fmt: skip

    return common.train_task(out, config, build, monitor=VQAModule.monitor, force=force)


@torch.no_grad()
def predict_answers(module: VQAModule, dataset: VQADataset) -> list[str]:
    """The argmax answer of every question of ``dataset``, in ``dataset.records`` order (eval mode)."""
    module.eval()
    predicted: list[str] = [""] * len(dataset.records)
    for batch in common.eval_loader(dataset, collate_questions):
        for position, answer in zip(batch["question_index"].tolist(), module(batch).argmax(dim=-1).tolist()):
            predicted[position] = module.labels[answer]
    return predicted


def evaluate_vqa(run: str | Path, data: str | Path | None = None, *, split: str = "test") -> dict[str, Any]:
    """Score a run's VQA model on ``split``: ``vqa`` in the run's metrics file, ``predictions/<split>.jsonl``."""
    trained = common.load_task(run, VQAModule)
    config = trained.module.config
    data = data or trained.data
    vqa_data = load_vqa_data(data, config.qa_file)
    questions = vqa_data.split(split)
    if not questions:
        raise ValueError(f"{data}: no question in split '{split}'")
    dataset = VQADataset(
        questions, trained.tokenizer, trained.labels, config.image_size, config.max_question_tokens
    )
    predicted = predict_answers(trained.module, dataset)
    records = dataset.records
    train_records = [r for r, _ in vqa_data.split("train")]
    metrics = {
        "split": split,
        "data": str(Path(data).resolve()),
        "use_image": config.use_image,
        "fusion": config.fusion.name,
        **vqa_accuracy(predicted, records),
        "answers_in_vocabulary": sum(r.answer in set(trained.labels) for r in records) / len(records),
        "baseline_majority": _headline(vqa_accuracy(majority_baseline(train_records, records), records)),
    }
    _write_predictions(trained.run.predictions(split), records, predicted)
    common.merge_metrics(trained.run, TASK, split, metrics)
    return metrics


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("accuracy", "closed_accuracy", "open_accuracy", "per_question_type")}


def _write_predictions(path: Path, records: Sequence[QARecord], predicted: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for record, answer in zip(records, predicted):
            row = {**record.to_json(), "predicted": answer, "correct": answer == record.answer}
            handle.write(json.dumps(row) + "\n")


def format_vqa_metrics(metrics: dict[str, Any]) -> str:
    """A small text table: model vs majority baseline, overall / closed / open and per question type."""
    base = metrics["baseline_majority"]

    def cell(value: float | None) -> str:
        return "  n/a " if value is None else f"{value:.3f}"

    lines = [
        f"split {metrics['split']}: {metrics['n']} questions ({metrics['n_closed']} closed, {metrics['n_open']} open)",
        f"  {'':<22}{'model':>8}{'majority':>10}",
    ]
    for key in ("accuracy", "closed_accuracy", "open_accuracy"):
        lines.append(f"  {key:<22}{cell(metrics[key]):>8}{cell(base[key]):>10}")
    for qtype, row in metrics["per_question_type"].items():
        lines.append(
            f"  {qtype:<22}{cell(row['accuracy']):>8}{cell(base['per_question_type'][qtype]['accuracy']):>10}   (n={row['n']})"
        )
    return "\n".join(lines)
