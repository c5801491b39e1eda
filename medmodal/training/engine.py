"""The one training engine: every run (supervised, pretraining, VQA, segmentation) is a Lightning fit
into a run folder (:class:`~medmodal.runs.RunDir`) set up by :func:`prepare_run`.

:func:`prepare_run` does what every kind of run needs before and around ``trainer.fit``:

* ``force``: clears what an earlier run wrote;
* the resume checkpoint: ``last.ckpt``, or ``best.ckpt`` when ``last.ckpt`` is damaged
  (:func:`~medmodal.training.checkpoints.resume_checkpoint`);
* the config check: a run folder is continued only with the configuration it was started with,
  but for :data:`RESUME_MAY_CHANGE` (where / how long it runs). A changed ``train.epochs`` is
  refused: the one-cycle learning-rate schedule is laid out over the planned number of steps;
* a finished run (``training_done.json``) is reported, not trained again;
* otherwise every random generator is seeded with ``train.seed``.

The :class:`PreparedRun` it returns writes the run files on rank zero only, makes the loggers
(``logs/csv``, ``logs/tensorboard``; after the N-th resume ``logs/csv-resumed-N`` so earlier logs
are kept), the strategy (plain ``ddp`` with ``find_unused_parameters``), the Lightning ``Trainer``
(:func:`lightning_trainer`), records each resume in ``resumes.json`` and writes ``training_done.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from pydantic import BaseModel, ValidationError

from medmodal.config import ConfigError, TrainerConfig, load_config, write_config_atomic
from medmodal.errors import RunError
from medmodal.runs import RunDir, write_json_atomic
from medmodal.safeio import UnreadableFileError
from medmodal.training.checkpoints import resume_checkpoint, run_checkpoints
from medmodal.training.reproducibility import EpochSeeding

log = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class RunConflictError(RunError, RuntimeError):
    """The output folder holds a run with a different configuration."""


# Settings that only change where a run executes (or when it stops early) may differ on resume.
# Not epochs: the one-cycle learning-rate schedule is laid out over the planned number of steps.
RESUME_MAY_CHANGE = {
    "devices",
    "num_nodes",
    "accelerator",
    "strategy",
    "progress_bar",
    "early_stopping_patience",
}


@dataclass
class TrainResult:
    run: RunDir
    best_score: float | None
    epochs_run: int
    seconds: float
    monitor: str | None = None  # the validation metric best_score is of (None: not recorded)


# ------------------------------------------------------------------------- set-up
def prepare_run(
    out: str | Path,
    config: ConfigT,
    *,
    force: bool = False,
    read_config: Callable[[Path], BaseModel] = load_config,
    outputs: Sequence[str] = (),
) -> PreparedRun:
    """Open the run folder ``out`` for training with ``config`` (a config with a ``train`` section).

    Args:
        force: start over: delete the checkpoints, logs and run files of an earlier run (and ``outputs``).
        read_config: reads the ``config.yaml`` of an earlier run as ``config``'s class.
        outputs: further files or folders (relative to the run) the kind of run writes, cleared by ``force``.

    Raises:
        RunConflictError: ``out`` holds a run with another configuration (say ``train.epochs``).
        ConfigError: its ``config.yaml`` is unreadable and there is no checkpoint to decide.
        UnsafeFileError / UnreadableFileError: from the resume checkpoint.
    """
    quiet_lightning()
    run = RunDir.at(out)
    if force and run.root.exists():
        clear_run(run, outputs)
    resume = resume_checkpoint(run)  # refuses a checkpoint that would unpickle code
    check_same_config(run, config, resume, read_config)
    prepared = PreparedRun(run, finished=finished_result(run))
    if resume is not None:
        prepared.resume_from, state = resume
        prepared.resume_epoch, prepared.resume_step = state.get("epoch"), state.get("global_step")
    if prepared.finished is not None:
        log.info("%s already finished training (%s); nothing to do", run.root, run.done.name)
    else:
        L.seed_everything(config.train.seed, workers=True, verbose=False)  # type: ignore[attr-defined]
    return prepared


@dataclass
class PreparedRun:
    """A run folder ready for ``trainer.fit`` (from :func:`prepare_run`)."""

    run: RunDir
    finished: TrainResult | None = None  # the recorded result when the run already finished
    resume_from: Path | None = None  # the checkpoint training resumes from; None = a fresh run
    resume_epoch: int | None = None
    resume_step: int | None = None

    @property
    def resumed(self) -> bool:
        return self.resume_from is not None

    def write_files(self, write: Callable[[RunDir], None]) -> None:
        """``write(run)`` on rank zero only (the other processes of a distributed run write nothing)."""
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning on the function object
            self.run.root.mkdir(parents=True, exist_ok=True)
            write(self.run)

    def loggers(self) -> list:
        """CSV and TensorBoard loggers under ``logs/``; a resumed run logs into new folders."""
        version = log_version(self.run, resumed=self.resumed)
        return [
            CSVLogger(save_dir=self.run.logs, name="", version=f"csv{version}"),
            TensorBoardLogger(
                save_dir=self.run.logs, name="", version=f"tensorboard{version}", default_hp_metric=False
            ),
        ]

    def trainer(self, train: TrainerConfig, callbacks: list) -> L.Trainer:
        """The Lightning ``Trainer`` of this run: :func:`lightning_trainer` with its loggers and strategy."""
        return lightning_trainer(train, self.run.root, strategy=lightning_strategy(train.strategy),
                                 callbacks=callbacks, loggers=self.loggers())  # fmt: skip

    def fit(self, trainer: L.Trainer, module: L.LightningModule, train_loader: Any, val_loader: Any) -> None:
        """``trainer.fit``, from the resume checkpoint if there is one (recorded in ``resumes.json``)."""
        if self.resume_from is not None:
            log.info("resuming from %s (step %s)", self.resume_from, self.resume_step)
            record_resume(self.run, self.resume_from, self.resume_epoch)
        # weights_only: Lightning's own load of the (already checked) checkpoint unpickles no objects either
        trainer.fit(module, train_loader, val_loader, ckpt_path=self.resume_from, weights_only=True)

    def train_module(
        self,
        train: TrainerConfig,
        module: L.LightningModule,
        train_loader: Any,
        val_loader: Any,
        *,
        monitor: str,
        start: float,
        mode: str = "max",
        callbacks: Sequence[L.Callback] = (),
        record: dict[str, Any] | None = None,
    ) -> TrainResult:
        """Fit ``module`` with ``best.ckpt`` (by ``monitor``) / ``last.ckpt``, per-epoch seeding and
        ``callbacks``; write ``training_done.json`` (plus ``record``) and return the result."""
        checkpoint, last_checkpoint = run_checkpoints(self.run, monitor, mode)
        trainer = self.trainer(train, [checkpoint, last_checkpoint, EpochSeeding(train.seed), *callbacks])
        self.fit(trainer, module, train_loader, val_loader)
        result = self.result(trainer, checkpoint.best_model_score, start, monitor)
        self.record_done(trainer, {
            "best_checkpoint": str(checkpoint.best_model_path), "monitor": monitor, "best_score": result.best_score,
            "epochs_run": result.epochs_run, "seconds": round(result.seconds, 1), **(record or {}),
        })  # fmt: skip
        return result

    def record_done(self, trainer: L.Trainer, record: dict[str, Any], path: Path | None = None) -> None:
        """Write ``record`` plus ``resumed`` / ``resumes`` to ``path`` (``training_done.json``), rank zero only."""
        if trainer.is_global_zero:
            resumes = len(read_resumes(self.run))
            write_json_atomic(path or self.run.done, {**record, "resumed": resumes > 0, "resumes": resumes})

    def result(
        self, trainer: L.Trainer, best_score: Any, start: float, monitor: str | None = None
    ) -> TrainResult:
        """The :class:`TrainResult` of a finished ``trainer.fit`` started at ``start`` (``time.time()``)."""
        return TrainResult(run=self.run, best_score=float(best_score) if best_score is not None else None,
                           epochs_run=trainer.current_epoch, seconds=time.time() - start, monitor=monitor)  # fmt: skip


# --------------------------------------------------------------------- config check
def same_run_config(old: BaseModel, new: BaseModel) -> bool:
    """Whether ``new`` continues the run of ``old`` (equal but for :data:`RESUME_MAY_CHANGE` in ``train``)."""
    dumps = old.model_dump(), new.model_dump()
    for dump in dumps:
        for key in RESUME_MAY_CHANGE:
            dump["train"].pop(key, None)
    return dumps[0] == dumps[1]


def check_same_config(
    run: RunDir,
    config: ConfigT,
    resume: tuple[Path, dict] | None,
    read_config: Callable[[Path], BaseModel] = load_config,
) -> None:
    """Refuse to continue a run folder trained with another config.

    ``config.yaml`` is checked first; when it is unreadable or differs (a damaged copy), the
    config stored in the checkpoint training would resume from decides, and a matching one
    lets the run continue (``config.yaml`` is rewritten) with a warning.
    """
    problem, unreadable, epochs_note = None, False, ""
    if run.config.exists():
        try:
            saved = read_config(run.config)
        except ConfigError as err:
            problem, unreadable = f"{run.config} cannot be read ({err})", True
        else:
            if same_run_config(saved, config):
                return
            problem, epochs_note = (
                f"{run.config} differs from the given configuration",
                _epochs_note(saved, config),
            )
    if resume is None:
        if problem is None:
            return  # nothing written yet
        if unreadable:
            raise ConfigError(
                f"{problem}; it may have been cut short by an interrupted copy. {run.root} holds no checkpoint "
                f"yet, so nothing is lost by deleting {run.config.name} (or training with --force)"
            )
        raise RunConflictError(
            f"{run.root} already holds a run with a different configuration{epochs_note}; "
            "use another --out, or --force to start over"
        )
    path, state = resume
    stored = checkpoint_config(path, state, type(config))
    if not same_run_config(stored, config):
        raise RunConflictError(
            f"{run.root} already holds a run with a different configuration (that of {path.name})"
            f"{_epochs_note(stored, config)}; use another --out, or --force to start over (deletes its checkpoints)"
        )
    if problem is not None:
        log.warning(
            "%s; the config stored in %s matches, continuing (config.yaml is rewritten)", problem, path
        )
        if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set by Lightning on the function object
            write_config_atomic(config, run.config)  # type: ignore[arg-type]  # any pydantic config dumps the same way


def _epochs_note(old: BaseModel, new: BaseModel) -> str:
    """Names ``train.epochs`` when that is what changed: a run cannot be continued for more (or fewer) epochs."""
    before, after = old.train.epochs, new.train.epochs  # type: ignore[attr-defined]
    if before == after:
        return ""
    return (f" (train.epochs {before} -> {after}: the learning-rate schedule is laid out over the planned "
            "epochs, so a run continues only with its own train.epochs)")  # fmt: skip


def checkpoint_config(path: Path, state: dict, cls: type[ConfigT]) -> ConfigT:
    """The training config a checkpoint was written with (its ``hyper_parameters``)."""
    try:
        return cls.model_validate(state["hyper_parameters"]["config"])
    except (KeyError, TypeError, ValidationError) as err:
        raise ConfigError(f"{path}: holds no readable training config: {str(err).splitlines()[0]}") from None


# -------------------------------------------------------------------- run records
def finished_result(run: RunDir) -> TrainResult | None:
    """The result recorded in ``training_done.json`` of a finished run, or None."""
    if not run.done.exists():
        return None
    try:
        done = json.loads(run.done.read_text())
        monitor = done.get("monitor")
        return TrainResult(run=run, best_score=done.get("best_score"), epochs_run=int(done["epochs_run"]),
                           seconds=float(done["seconds"]), monitor=monitor if isinstance(monitor, str) else None)  # fmt: skip
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s cannot be read (%s); training is resumed and writes it again", run.done, err)
        return None


def read_resumes(run: RunDir) -> list[dict]:
    """The entries of ``resumes.json`` (one per resume), [] if never resumed."""
    if not run.resumes.exists():
        return []
    try:
        entries = json.loads(run.resumes.read_text())
    except ValueError as err:
        raise UnreadableFileError(
            f"{run.resumes}: not readable JSON ({err}); delete it to count resumes afresh"
        ) from None
    return entries if isinstance(entries, list) else []


@rank_zero_only
def record_resume(run: RunDir, checkpoint: Path, epoch: Any) -> None:
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoint": checkpoint.name, "epoch": epoch}
    write_json_atomic(run.resumes, [*read_resumes(run), entry])


def log_version(run: RunDir, resumed: bool) -> str:
    """Suffix of the log folders: "" for a fresh run, "-resumed-N" for the N-th resume, so a resumed
    run never overwrites the metrics logged before the interruption (Lightning's CSVLogger would)."""
    if not resumed:
        return ""
    n = 1
    while (run.logs / f"csv-resumed-{n}").exists():
        n += 1
    return f"-resumed-{n}"


def clear_run(run: RunDir, outputs: Sequence[str] = ()) -> None:
    """Delete what a run wrote into ``run`` (checkpoints, logs, run files, and ``outputs``)."""
    for path in (run.checkpoints, run.logs, run.root / "predictions", *(run.root / name for name in outputs)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for path in (run.config, run.tokenizer, run.labels, run.data_summary, run.done, run.metrics, run.resumes):
        path.unlink(missing_ok=True)


# ------------------------------------------------------------------------ Lightning
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


def lightning_strategy(name: str):
    """Lightning strategy by name. Plain "ddp" gets ``find_unused_parameters``: the missing-modality
    placeholders (and unimodal heads of an absent branch) take no part in batches where every study
    has both modalities, which plain DDP treats as an error."""
    if name == "ddp":
        return DDPStrategy(find_unused_parameters=True)
    return name


def lightning_trainer(
    t: TrainerConfig, root: Path, *, strategy: Any, callbacks: list, loggers: list
) -> L.Trainer:
    """The Lightning ``Trainer`` of a ``train`` config section (epochs, devices, precision, clipping,
    logging cadence), shared by every kind of run."""
    return L.Trainer(
        default_root_dir=root,
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,  # type: ignore[arg-type]  # validated by Lightning
        deterministic=t.deterministic,
        gradient_clip_val=t.gradient_clip or None,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        limit_train_batches=t.limit_train_batches,
        callbacks=callbacks,
        logger=loggers,
    )
