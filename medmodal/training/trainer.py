"""``medmodal train``: read the data, build the vocabulary and the model, fit with Lightning.

Lightning provides the engine: atomic checkpoints (``best.ckpt`` by the monitored
validation metric, ``last.ckpt`` for resuming), early stopping, CSV and
TensorBoard logs, the progress bar, and distributed training (``--devices 2
--strategy ddp`` on CPU processes or GPUs; multi-node with ``--num-nodes`` under
torchrun / SLURM).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medmodal.config import Config, TrainConfig, save_config
from medmodal.data.dataset import StudyDataset, make_dataloader
from medmodal.data.manifest import Manifest, read_manifest
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.training.domain_adaptation import site_names, split_target_sites, with_unlabeled
from medmodal.training.losses import positive_weights
from medmodal.training.module import MultimodalModule
from medmodal.training.run import RunDir, write_json_atomic

log = logging.getLogger(__name__)


class RunConflictError(RuntimeError):
    """The output folder holds a run with a different configuration."""


def read_dataset(data: str | Path, config: Config, labels: list[str] | None = None) -> Manifest:
    """Read and validate the manifest of ``data`` (a folder or a manifest file) with the config's policies."""
    path = Path(data)
    if path.is_dir() and (path / config.data.manifest).exists():
        path = path / config.data.manifest
    return read_manifest(
        path,
        labels=labels if labels is not None else config.data.labels,
        on_bad_row=config.data.on_bad_row,
        check_images=config.data.check_images,
        allow_outside_paths=config.data.allow_outside_paths,
        split_fractions=config.data.split_fractions,
        split_seed=config.data.split_seed,
    )


def build_dataset(studies: list[Study], tokenizer: ReportTokenizer, labels: list[str], config: Config, train: bool) -> StudyDataset:
    """The torch dataset of ``studies`` as the config describes it."""
    d = config.data
    return StudyDataset(
        studies,
        tokenizer,
        labels,
        image_size=d.image_size,
        text_fields=d.text_fields,
        target_fields=d.target_fields,
        max_text_tokens=d.max_text_tokens,
        max_target_tokens=d.max_target_tokens,
        augment=d.augment if train else None,
        cache_images=d.cache_images,
        train=train,
        seed=config.train.seed,
    )


def vocabulary_texts(studies: list[Study], config: Config) -> list[str]:
    """The texts the vocabulary is learnt from: input and target fields of the training studies."""
    fields = list(dict.fromkeys([*config.data.text_fields, *config.data.target_fields]))
    return [s.sections.get(f, "") for s in studies for f in fields if s.sections.get(f)]


def training_subset(studies: list[Study], fraction: float, seed: int) -> list[Study]:
    """A seeded share of the training studies (``data.train_fraction``), in manifest order.

    ``ceil(fraction * N)`` studies (at least one) chosen by one seeded permutation, so with the
    same seed a smaller fraction is a subset of a larger one; ``fraction == 1`` keeps all.
    """
    if fraction >= 1.0 or not studies:
        return list(studies)
    import math

    import numpy as np

    keep = max(1, math.ceil(fraction * len(studies)))
    chosen = np.random.default_rng(seed).permutation(len(studies))[:keep]
    return [studies[i] for i in sorted(chosen.tolist())]


def load_or_train_tokenizer(run: RunDir, train_studies: list[Study], config: Config) -> ReportTokenizer:
    """The run's own tokenizer (resume), else ``data.tokenizer_path``, else one learnt from ``train_studies``."""
    if run.tokenizer.exists():
        return ReportTokenizer.load(run.tokenizer)
    if config.data.tokenizer_path:
        path = Path(config.data.tokenizer_path)
        if not path.is_file():
            raise FileNotFoundError(f"data.tokenizer_path: tokenizer file not found: {path}")
        return ReportTokenizer.load(path)
    return ReportTokenizer.train(vocabulary_texts(train_studies, config), min_freq=config.data.min_token_freq)


def label_matrix(studies: list[Study], labels: list[str]) -> torch.Tensor:
    """[N, C] multi-hot matrix of ``studies``' labels."""
    index = {name: i for i, name in enumerate(labels)}
    matrix = torch.zeros(len(studies), len(labels))
    for row, study in enumerate(studies):
        for name in study.labels:
            if name in index:
                matrix[row, index[name]] = 1.0
    return matrix


@dataclass
class TrainResult:
    run: RunDir
    best_score: float | None
    epochs_run: int
    seconds: float


def _check_same_config(run: RunDir, config: Config) -> None:
    if not run.config.exists():
        return
    previous = run.load_config()
    # Settings that only change how long / where training runs may differ on resume.
    # Not epochs: the one-cycle learning-rate schedule is laid out over the planned number of steps.
    ignore = {"devices", "num_nodes", "accelerator", "strategy", "progress_bar", "early_stopping_patience"}
    old = previous.model_dump()
    new = config.model_dump()
    for key in ignore:
        old["train"].pop(key, None)
        new["train"].pop(key, None)
    if old != new:
        raise RunConflictError(
            f"{run.root} already holds a run with a different configuration; use another --out, or --force to start over"
        )


def quiet_lightning() -> None:
    """One line per message: Lightning logs through its own handler, so stop it propagating to ours,
    and drop its advice that does not apply to small CPU runs."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    # Resuming writes into the run's own checkpoint folder on purpose.
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")


def lightning_trainer(t: TrainConfig, root: Path, *, strategy: Any, callbacks: list, loggers: list) -> L.Trainer:
    """The Lightning ``Trainer`` of a ``train`` config section (epochs, devices, precision, clipping,
    logging cadence), shared by supervised training and contrastive pretraining."""
    return L.Trainer(
        default_root_dir=root,
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        limit_train_batches=t.limit_train_batches,
        callbacks=callbacks,
        logger=loggers,
    )


def train(data: str | Path, config: Config, out: str | Path, *, force: bool = False) -> TrainResult:
    """Train a model on ``data`` into the run folder ``out``; resumes from ``last.ckpt`` if present."""
    start = time.time()
    quiet_lightning()
    run = RunDir.at(out)
    if force and run.root.exists():
        _clear_run(run)
    _check_same_config(run, config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)

    manifest = read_dataset(data, config)
    labels = manifest.label_names
    train_studies, val_studies = manifest.split("train"), manifest.split("val")
    if not train_studies:
        raise ValueError(f"{manifest.path}: no training studies (split 'train' is empty)")
    if not val_studies:
        raise ValueError(f"{manifest.path}: no validation studies (split 'val' is empty); add a val split or leave 'split' empty")

    # Target sites (domain adaptation): labels never used; their training studies come back unlabeled.
    train_studies, val_studies, unlabeled = split_target_sites(train_studies, val_studies, config.train.domain_adaptation)
    train_studies = training_subset(train_studies, config.data.train_fraction, config.data.split_seed)
    tokenizer = load_or_train_tokenizer(run, train_studies, config)
    train_labels = label_matrix(train_studies, labels)
    _write_run_files(run, config, tokenizer, labels, train_labels, manifest, data)

    module = MultimodalModule(
        config.model_dump(mode="json"),
        vocab_size=tokenizer.vocab_size,
        num_labels=len(labels),
        pad_id=tokenizer.pad_id,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        pos_weight=positive_weights(train_labels),
        site_names=site_names(train_studies + unlabeled) if config.train.domain_adaptation.method == "dann" else None,
    )
    t = config.train
    train_set = build_dataset(train_studies, tokenizer, labels, config, train=True)
    if unlabeled:
        train_set = with_unlabeled(train_set, build_dataset(unlabeled, tokenizer, labels, config, train=True))
    train_loader = make_dataloader(
        train_set,
        batch_size=t.batch_size, shuffle=True, num_workers=config.data.num_workers, seed=t.seed,
    )
    val_loader = make_dataloader(
        build_dataset(val_studies, tokenizer, labels, config, train=False),
        batch_size=t.batch_size, shuffle=False, num_workers=config.data.num_workers, seed=t.seed,
    )
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints, filename="best", monitor=t.monitor, mode="max", save_top_k=1,
        save_last=True, auto_insert_metric_name=False, enable_version_counter=False,
    )
    callbacks: list = [checkpoint]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode="max", patience=t.early_stopping_patience))
    resume_from = run.last_checkpoint if run.last_checkpoint.exists() else None
    log_version = _log_version(run, resumed=resume_from is not None)
    trainer = lightning_trainer(
        t, run.root, strategy=_strategy(t.strategy), callbacks=callbacks,
        loggers=[
            CSVLogger(save_dir=run.logs, name="", version=f"csv{log_version}"),
            TensorBoardLogger(save_dir=run.logs, name="", version=f"tensorboard{log_version}", default_hp_metric=False),
        ],
    )  # fmt: skip
    if resume_from is not None:
        state = torch.load(resume_from, map_location="cpu", weights_only=False)
        log.info("resuming from %s (step %d)", resume_from, state["global_step"])
        del state
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from)

    best = checkpoint.best_model_score
    result = TrainResult(
        run=run,
        best_score=float(best) if best is not None else None,
        epochs_run=trainer.current_epoch,
        seconds=time.time() - start,
    )
    if trainer.is_global_zero:
        write_json_atomic(
            run.done,
            {"best_checkpoint": str(checkpoint.best_model_path), "monitor": t.monitor, "best_score": result.best_score,
             "epochs_run": result.epochs_run, "seconds": round(result.seconds, 1)},
        )
    return result


@rank_zero_only
def _write_run_files(run, config, tokenizer, labels, train_labels, manifest, data) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(config, run.config)
    if not run.tokenizer.exists():
        tokenizer.save(run.tokenizer)
    prevalence = (train_labels.mean(dim=0) if len(train_labels) else torch.zeros(len(labels))).tolist()
    write_json_atomic(run.labels, {"labels": labels, "train_prevalence": dict(zip(labels, prevalence))})
    summary = manifest.summary()
    summary["data"] = str(Path(data).resolve())
    summary["problems"] = [str(p) for p in manifest.problems]
    write_json_atomic(run.data_summary, summary)


def _strategy(name: str):
    """Lightning strategy by name. Plain "ddp" gets ``find_unused_parameters``: the missing-modality
    placeholders (and unimodal heads of an absent branch) take no part in batches where every study
    has both modalities, which plain DDP treats as an error."""
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return name


def _log_version(run: RunDir, resumed: bool) -> str:
    """Suffix of the log folders: "" for a fresh run, "-resumed-N" for the N-th resume, so a resumed
    run never overwrites the metrics logged before the interruption (Lightning's CSVLogger would)."""
    if not resumed:
        return ""
    n = 1
    while (run.logs / f"csv-resumed-{n}").exists():
        n += 1
    return f"-resumed-{n}"


def _clear_run(run: RunDir) -> None:
    import shutil

    for path in (run.checkpoints, run.logs):
        shutil.rmtree(path, ignore_errors=True)
    for path in (run.config, run.tokenizer, run.labels, run.data_summary, run.done, run.metrics):
        path.unlink(missing_ok=True)
