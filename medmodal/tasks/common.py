"""What the tasks share: training through the one engine, the run files, loading, metrics merging.

A task trains into a run folder of the usual layout (:mod:`medmodal.runs`)::

    RUN/
      config.yaml              the task's config (VQAConfig / SegmentationConfig)
      tokenizer.json           question / report vocabulary
      labels.json              {"labels": the answer vocabulary (VQA) or the finding classes (segmentation)}
      data_summary.json        the data folder and how many items each split has
      checkpoints/             best.ckpt (best validation score), last.ckpt (resume)
      logs/csv/, logs/tensorboard/ (logs/csv-resumed-N/ after the N-th resume)
      training_done.json       epochs run, best score, time, resumes
      metrics.json             ``evaluate``: the task's figures under its key (``vqa`` / ``segmentation``)
      predictions/<split>.jsonl  per-question predictions (VQA)

The training is :func:`medmodal.training.engine.prepare_run` + ``PreparedRun.train_module``, as for
``medmodal train`` and ``medmodal pretrain``: resume after a kill, device handling, logs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import lightning as L
from pydantic import BaseModel
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from medmodal.config import write_config_atomic
from medmodal.data.manifest import Manifest, find_manifest_file, read_manifest
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.runs import RunDir, write_json_atomic
from medmodal.tasks.config import C, load_task_config
from medmodal.training.checkpoints import module_from_checkpoint
from medmodal.training.engine import PreparedRun, TrainResult, prepare_run
from medmodal.training.optim import adamw_one_cycle, single_group
from medmodal.training.reproducibility import epoch_seeded_loader

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 64
ModuleT = TypeVar("ModuleT", bound=L.LightningModule)


def read_task_manifest(data: str | Path) -> Manifest:
    """The validated manifest of a dataset folder (or manifest file); bad rows are skipped with a warning."""
    return read_manifest(find_manifest_file(data), on_bad_row="skip", check_images=True)


# ------------------------------------------------------------------------- module
class TaskModule(L.LightningModule):
    """A task's LightningModule: ``config`` validated as :attr:`config_class`, the task's ``labels``
    (answers or finding classes), the network of :meth:`build_network`, AdamW + one-cycle.

    Everything needed to rebuild it is in the hyper-parameters, so
    :func:`~medmodal.training.checkpoints.module_from_checkpoint` restores it from the checkpoint alone.
    """

    config_class: type[BaseModel]
    monitor: str  # the validation metric best.ckpt maximises

    def __init__(self, config: dict[str, Any], vocab_size: int, pad_id: int, labels: list[str]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = self.config_class.model_validate(config)
        self.labels = list(labels)
        self.model = self.build_network(vocab_size, pad_id)

    def build_network(self, vocab_size: int, pad_id: int) -> nn.Module:
        raise NotImplementedError

    def configure_optimizers(self):
        t = self.config.train
        return adamw_one_cycle(single_group(self, t.lr), t, self.trainer.estimated_stepping_batches)


# ------------------------------------------------------------------------ training
@dataclass
class TaskData:
    """What a task's training is built from, once its data is read (see :func:`train_task`)."""

    module: L.LightningModule
    train_set: Dataset
    val_set: Dataset
    tokenizer: ReportTokenizer
    labels: list[str]  # answers (VQA) or finding classes (segmentation): labels.json
    summary: dict[str, Any]  # data_summary.json
    collate: Callable[[list], Any] = field(default=default_collate)


def train_task(
    out: str | Path,
    config: C,
    build: Callable[[PreparedRun], TaskData],
    *,
    monitor: str,
    force: bool = False,
) -> TrainResult:
    """Train a task into the run folder ``out`` with the engine of every medmodal run.

    Args:
        config: the task's config (its class reads ``config.yaml`` back on resume).
        build: reads the data and makes the module and datasets (called after seeding; the run's
            own ``tokenizer.json`` is there to reuse when it resumes).
        monitor: the validation metric ``best.ckpt`` maximises.
        force: start over instead of resuming.
    """
    start = time.time()
    prepared = prepare_run(out, config, force=force, read_config=partial(load_task_config, type(config)))
    if prepared.finished is not None:
        return prepared.finished
    task = build(prepared)
    prepared.write_files(partial(_write_task_files, config=config, task=task))
    t = config.train
    train_loader = epoch_seeded_loader(task.train_set, t.batch_size, t.seed, collate_fn=task.collate)
    val_loader = DataLoader(task.val_set, batch_size=EVAL_BATCH_SIZE, shuffle=False, collate_fn=task.collate)
    return prepared.train_module(t, task.module, train_loader, val_loader, monitor=monitor, start=start)


def run_tokenizer(run: RunDir, texts: Callable[[], list[str]], min_freq: int) -> ReportTokenizer:
    """The run's own tokenizer when it resumes, else one learnt from ``texts()``."""
    if run.tokenizer.exists():
        return ReportTokenizer.load(run.tokenizer)
    return ReportTokenizer.train(texts(), min_freq=min_freq)


def _write_task_files(run: RunDir, config: Any, task: TaskData) -> None:
    write_config_atomic(config, run.config)  # atomic, and untouched when unchanged
    if not run.tokenizer.exists():
        task.tokenizer.save(run.tokenizer)  # atomic
    write_json_atomic(run.labels, {"labels": task.labels})
    write_json_atomic(run.data_summary, task.summary)


# ------------------------------------------------------------------------- loading
@dataclass
class TrainedTask(Generic[ModuleT]):
    """A task's trained module (eval mode, CPU, best checkpoint) with what evaluation needs."""

    run: RunDir
    module: ModuleT
    tokenizer: ReportTokenizer
    labels: list[str]

    @property
    def data(self) -> str:
        """The dataset the task was trained on (``data_summary.json``)."""
        return json.loads(self.run.data_summary.read_text())["data"]


def load_task(run: str | Path, module_class: type[ModuleT]) -> TrainedTask[ModuleT]:
    """The trained ``module_class`` of a task's run folder (``best.ckpt``, else ``last.ckpt``; never unpickles code)."""
    run_dir = RunDir.at(run)
    run_dir.require_trained()
    module = module_from_checkpoint(module_class, run_dir.model_checkpoint()).eval()
    return TrainedTask(run_dir, module, ReportTokenizer.load(run_dir.tokenizer), run_dir.load_labels())


def eval_loader(dataset: Dataset, collate: Callable[[list], Any] = default_collate) -> DataLoader:
    return DataLoader(dataset, batch_size=EVAL_BATCH_SIZE, shuffle=False, collate_fn=collate)


# ------------------------------------------------------------------------- metrics
def metrics_file(run: RunDir, split: str) -> Path:
    """``RUN/metrics.json`` for the test split, ``RUN/metrics_<split>.json`` otherwise (as ``medmodal evaluate``)."""
    return run.metrics if split == "test" else run.root / f"metrics_{split}.json"


def merge_metrics(run: RunDir, task: str, split: str, metrics: dict[str, Any]) -> Path:
    """Put ``metrics`` under ``task`` in the run's metrics file of ``split``, keeping its other keys."""
    path = metrics_file(run, split)
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            log.warning("%s is not valid JSON; rewriting it", path)
        if not isinstance(existing, dict):
            existing = {}
    existing[task] = metrics
    write_json_atomic(path, existing)
    return path
