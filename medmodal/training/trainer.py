"""``medmodal train``: read the data, build the vocabulary and the model, fit with Lightning.

Lightning provides the engine: atomic checkpoints (``best.ckpt`` by the monitored
validation metric, ``last.ckpt`` for resuming), early stopping, CSV and
TensorBoard logs, the progress bar, and distributed training (``--devices 2
--strategy ddp`` on CPU processes or GPUs; multi-node with ``--num-nodes`` under
torchrun / SLURM).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medmodal.config import Config, ConfigError, TrainConfig, load_config, write_config_atomic
from medmodal.data.dataset import make_dataloader
from medmodal.data.pipeline import (
    build_dataset,
    label_matrix,
    load_or_train_tokenizer,
    read_dataset,
    training_subset,
)
from medmodal.data.prepared import is_prepared
from medmodal.errors import RunError
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.artifacts import ModelArtifacts, StoreArtifacts
from medmodal.training.checkpoints import resume_checkpoint, run_checkpoints
from medmodal.training.data_defaults import heads_for_data
from medmodal.training.domain_adaptation import site_names, split_target_sites, with_unlabeled
from medmodal.training.losses import positive_weights
from medmodal.training.module import MultimodalModule
from medmodal.training.reproducibility import EpochSeeding, epoch_seeded_loader

log = logging.getLogger(__name__)


class RunConflictError(RunError, RuntimeError):
    """The output folder holds a run with a different configuration."""


@dataclass
class TrainResult:
    run: RunDir
    best_score: float | None
    epochs_run: int
    seconds: float


# Settings that only change how long / where training runs may differ on resume.
# Not epochs: the one-cycle learning-rate schedule is laid out over the planned number of steps.
_RESUME_MAY_CHANGE = {"devices", "num_nodes", "accelerator", "strategy", "progress_bar", "early_stopping_patience"}


def same_run_config(old: Config, new: Config) -> bool:
    """Whether ``new`` continues the run of ``old`` (equal but for :data:`_RESUME_MAY_CHANGE`)."""
    dumps = old.model_dump(), new.model_dump()
    for dump in dumps:
        for key in _RESUME_MAY_CHANGE:
            dump["train"].pop(key, None)
    return dumps[0] == dumps[1]


def _check_same_config(run: RunDir, config: Config, resume: tuple[Path, dict] | None) -> None:
    """Refuse to continue a run folder trained with another config.

    ``config.yaml`` is checked first; when it is unreadable or differs (a damaged copy), the
    config stored in the checkpoint training would resume from decides, and a matching one
    lets the run continue (``config.yaml`` is rewritten) with a warning.
    """
    problem, unreadable = None, False
    if run.config.exists():
        try:
            if same_run_config(load_config(run.config), config):
                return
            problem = f"{run.config} differs from the given configuration"
        except ConfigError as err:
            problem, unreadable = f"{run.config} cannot be read ({err})", True
    if resume is None:
        if problem is None:
            return  # nothing written yet
        if unreadable:
            raise ConfigError(
                f"{problem}; it may have been cut short by an interrupted copy. {run.root} holds no checkpoint "
                f"yet, so nothing is lost by deleting {run.config.name} (or training with --force)"
            )
        raise RunConflictError(
            f"{run.root} already holds a run with a different configuration; use another --out, or --force to start over"
        )
    path, state = resume
    stored = _checkpoint_config(path, state)
    if not same_run_config(stored, config):
        raise RunConflictError(
            f"{run.root} already holds a run with a different configuration (that of {path.name}); "
            "use another --out, or --force to start over (deletes its checkpoints)"
        )
    if problem is not None:
        log.warning("%s; the config stored in %s matches, continuing (config.yaml is rewritten)", problem, path)
        if rank_zero_only.rank == 0:
            write_config_atomic(config, run.config)


def _checkpoint_config(path: Path, state: dict) -> Config:
    """The training config a checkpoint was written with (its ``hyper_parameters``)."""
    from pydantic import ValidationError

    try:
        return Config.model_validate(state["hyper_parameters"]["config"])
    except (KeyError, TypeError, ValidationError) as err:
        raise ConfigError(f"{path}: holds no readable training config: {str(err).splitlines()[0]}") from None


def finished_result(run: RunDir) -> TrainResult | None:
    """The result recorded in ``training_done.json`` of a finished run, or None."""
    if not run.done.exists():
        return None
    try:
        done = json.loads(run.done.read_text())
        return TrainResult(run=run, best_score=done.get("best_score"), epochs_run=int(done["epochs_run"]),
                           seconds=float(done["seconds"]))  # fmt: skip
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s cannot be read (%s); training is resumed and writes it again", run.done, err)
        return None


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


def train(data: str | Path, config: Config, out: str | Path, *, force: bool = False,
          callbacks: Sequence[L.Callback] = ()) -> TrainResult:  # fmt: skip
    """Train a model on ``data`` into the run folder ``out``; resumes from ``last.ckpt`` if present.
    ``callbacks``: further Lightning callbacks (the Python API's ``medmodal.train``)."""
    if is_prepared(data):  # streamed from the shards, never all studies in memory (docs/prepare.md)
        from medmodal.training.prepared_training import train_prepared

        return train_prepared(str(data), config, out, force=force, callbacks=callbacks)
    start = time.time()
    quiet_lightning()
    run = RunDir.at(out)
    if force and run.root.exists():
        _clear_run(run)
    manifest = read_dataset(data, config)
    config = heads_for_data(config, manifest.split("train"))  # no target text / no boxes: no such head
    resume = resume_checkpoint(run)  # refuses a checkpoint that would unpickle code
    _check_same_config(run, config, resume)
    finished = finished_result(run)
    if finished is not None:
        log.info("%s already finished training (%s); nothing to do", run.root, run.done.name)
        return finished
    L.seed_everything(config.train.seed, workers=True, verbose=False)

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
    # Each epoch's order and augmentation depend only on (seed, epoch): resume reproduces.
    train_loader = epoch_seeded_loader(train_set, t.batch_size, t.seed, num_workers=config.data.num_workers)
    val_loader = make_dataloader(
        build_dataset(val_studies, tokenizer, labels, config, train=False),
        batch_size=t.batch_size, shuffle=False, num_workers=config.data.num_workers, seed=t.seed,
    )
    checkpoint, last_checkpoint = run_checkpoints(run, t.monitor, "max")
    # labels and vocabulary stored in every checkpoint (medmodal.training.artifacts)
    callbacks = [checkpoint, last_checkpoint, EpochSeeding(t.seed), StoreArtifacts(ModelArtifacts(labels, tokenizer)),
                 *callbacks]  # fmt: skip
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode="max", patience=t.early_stopping_patience))
    resume_from = resume[0] if resume is not None else None
    log_version = _log_version(run, resumed=resume_from is not None)
    trainer = lightning_trainer(
        t, run.root, strategy=_strategy(t.strategy), callbacks=callbacks,
        loggers=[
            CSVLogger(save_dir=run.logs, name="", version=f"csv{log_version}"),
            TensorBoardLogger(save_dir=run.logs, name="", version=f"tensorboard{log_version}", default_hp_metric=False),
        ],
    )  # fmt: skip
    if resume is not None:
        log.info("resuming from %s (step %s)", resume_from, resume[1].get("global_step"))
        _record_resume(run, resume_from, resume[1].get("epoch"))
        del resume
    # weights_only: Lightning's own load of the (already checked) checkpoint unpickles no objects either
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)

    best = checkpoint.best_model_score
    result = TrainResult(
        run=run,
        best_score=float(best) if best is not None else None,
        epochs_run=trainer.current_epoch,
        seconds=time.time() - start,
    )
    if trainer.is_global_zero:
        resumes = len(read_resumes(run))
        write_json_atomic(
            run.done,
            {"best_checkpoint": str(checkpoint.best_model_path), "monitor": t.monitor, "best_score": result.best_score,
             "epochs_run": result.epochs_run, "seconds": round(result.seconds, 1),
             "resumed": resumes > 0, "resumes": resumes},
        )  # fmt: skip
    return result


def read_resumes(run: RunDir) -> list[dict]:
    """The entries of ``resumes.json`` (one per resume), [] if never resumed."""
    if not run.resumes.exists():
        return []
    try:
        entries = json.loads(run.resumes.read_text())
    except ValueError as err:
        raise ValueError(f"{run.resumes}: not readable JSON ({err}); delete it to count resumes afresh") from None
    return entries if isinstance(entries, list) else []


@rank_zero_only
def _record_resume(run: RunDir, checkpoint: Path, epoch: Any) -> None:
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": checkpoint.name, "epoch": epoch}
    write_json_atomic(run.resumes, [*read_resumes(run), entry])


@rank_zero_only
def _write_run_files(run, config, tokenizer, labels, train_labels, manifest, data) -> None:
    run.root.mkdir(parents=True, exist_ok=True)
    write_config_atomic(config, run.config)  # atomic, and untouched when unchanged
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
    for path in (run.config, run.tokenizer, run.labels, run.data_summary, run.done, run.metrics, run.resumes):
        path.unlink(missing_ok=True)
