"""What the task modules share: the task's folder inside a run, the training loop, metrics.json merging.

A task writes into ``RUN/<task>/`` (``config.yaml``, ``tokenizer.json``,
``model.pt``, ``training.json``, ``predictions_<split>.jsonl``) and adds its
metrics to ``RUN/metrics.json`` under its own key (``vqa``, ``segmentation``),
leaving the other keys alone, so one run folder can hold several tasks and the
supervised model.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medmodal.data.manifest import Manifest, find_manifest_file, read_manifest
from medmodal.runs import write_json_atomic
from medmodal.tasks.config import TaskTrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskDir:
    """Paths of one task inside a run folder."""

    run: Path
    task: str

    @classmethod
    def at(cls, run: str | Path, task: str) -> TaskDir:
        return cls(Path(run).resolve(), task)

    @property
    def root(self) -> Path:
        return self.run / self.task

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def weights(self) -> Path:
        return self.root / "model.pt"

    @property
    def training(self) -> Path:
        return self.root / "training.json"

    def predictions(self, split: str) -> Path:
        return self.root / f"predictions_{split}.jsonl"

    def metrics_file(self, split: str) -> Path:
        """``RUN/metrics.json`` for the test split, ``RUN/metrics_<split>.json`` otherwise (as ``medmodal evaluate``)."""
        return self.run / ("metrics.json" if split == "test" else f"metrics_{split}.json")

    def require_trained(self) -> None:
        for needed in (self.config, self.tokenizer, self.weights, self.training):
            if not needed.exists():
                raise FileNotFoundError(
                    f"{self.run} holds no trained {self.task} model (missing {needed.relative_to(self.run)}); "
                    f"train it first: medmodal {self.task} train --data DATA --out {self.run}"
                )

    def prepare(self, force: bool) -> None:
        """Create the task folder; refuse to overwrite a trained model unless ``force``."""
        if self.weights.exists() and not force:
            from medmodal.training.trainer import RunConflictError  # a user error the CLI prints cleanly

            raise RunConflictError(f"{self.root} already holds a trained {self.task} model; pass --force to retrain")
        self.root.mkdir(parents=True, exist_ok=True)


def read_task_manifest(data: str | Path) -> Manifest:
    """The validated manifest of a dataset folder (or manifest file); bad rows are skipped with a warning."""
    return read_manifest(find_manifest_file(data), on_bad_row="skip", check_images=True)


def merge_metrics(task_dir: TaskDir, split: str, metrics: dict[str, Any]) -> Path:
    """Put ``metrics`` under ``task_dir.task`` in the run's metrics file, keeping its other keys."""
    path = task_dir.metrics_file(split)
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            log.warning("%s is not valid JSON; rewriting it", path)
        if not isinstance(existing, dict):
            existing = {}
    existing[task_dir.task] = metrics
    write_json_atomic(path, existing)
    return path


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the kept epoch (1-based), its validation score, per-epoch history."""

    best_epoch: int
    best_score: float | None
    seconds: float
    history: list[dict[str, float | None]] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def fit(
    model: nn.Module,
    train_batches: Iterable[dict],
    loss_of: Callable[[dict], Tensor],
    validation_score: Callable[[], float | None],
    config: TaskTrainConfig,
    task: str = "task",
) -> FitResult:
    """Train ``model`` with AdamW for ``config.epochs`` epochs; keep the weights of the best validation epoch.

    A plain loop (not Lightning) on purpose: these heads train in minutes on a CPU from one
    process, and what Lightning adds (distributed strategies, resumable checkpoints) does not
    pay for its per-step overhead here.

    Args:
        train_batches: re-iterable (a DataLoader), one pass per epoch.
        loss_of: batch -> scalar loss (model in train mode).
        validation_score: higher is better, computed with the model in eval mode and no
            gradient; None (no validation data) keeps the last epoch.
    """
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_state, best_score, best_epoch = None, None, 0
    history, start = [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch in train_batches:
            loss = loss_of(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.gradient_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip)
            optimizer.step()
            total, count = total + float(loss.detach()), count + 1
        model.eval()
        with torch.no_grad():
            score = validation_score()
        train_loss = total / max(count, 1)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_score": score})
        log.info("%s epoch %d/%d: train loss %.4f, validation score %s", task, epoch, config.epochs, train_loss,
                 "n/a" if score is None else f"{score:.4f}")
        if best_state is None or score is None or _comparable(score) > _comparable(best_score):
            best_state, best_score, best_epoch = copy.deepcopy(model.state_dict()), score, epoch
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch, best_score, time.perf_counter() - start, history)


def _comparable(score: float | None) -> float:
    return -math.inf if score is None or math.isnan(score) else score


def seeded_generator(seed: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
