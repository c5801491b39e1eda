"""Lightning checkpoints of a run folder, read without unpickling code.

Run folders are what people share, so every checkpoint medmodal reads (inference, resume,
pretraining encoders) goes through :func:`read_checkpoint` (``torch.load(weights_only=True)``
via :func:`medmodal.safeio.load_torch_file`): a checkpoint whose pickle would call a function
is refused with :class:`~medmodal.safeio.UnsafeFileError` naming the file.

:func:`module_from_checkpoint` rebuilds a LightningModule from the checkpoint's
``hyper_parameters`` and ``state_dict`` (instead of ``LightningModule.load_from_checkpoint``):
the module is first laid out on the ``meta`` device, which allocates nothing, and its
parameter names and shapes must equal the checkpoint's before the real module is built, so
hyper-parameters describing a huge model cannot exhaust memory.

:func:`resume_checkpoint` chooses the checkpoint a resumed training starts from:
``last.ckpt``, or ``best.ckpt`` with a warning when ``last.ckpt`` is damaged;
:func:`run_checkpoints` makes the callbacks that write them. :class:`BestCheckpointStage` is a
step run once when ``fit`` ends on the best checkpoint's weights, whose result is written back
into that checkpoint atomically (the report bank, the localization refit).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Dataset

from medmodal.data.dataset import make_dataloader
from medmodal.models.calibration import fill_missing_calibration
from medmodal.runs import RunDir
from medmodal.safeio import UnreadableFileError, load_torch_file

log = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=L.LightningModule)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of ``path`` (tensors and plain values only).

    Raises:
        FileNotFoundError, UnsafeFileError, UnreadableFileError (see :func:`load_torch_file`);
        UnreadableFileError also when it is not a Lightning checkpoint (no ``state_dict``).
    """
    state = load_torch_file(path, "checkpoint")
    if not isinstance(state, Mapping) or not isinstance(state.get("state_dict"), Mapping):
        raise UnreadableFileError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return dict(state)


def write_checkpoint_atomic(state: Mapping[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename it over ``path``: a killed
    process leaves the old checkpoint or the new one, never a torn file."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, path)


def eval_batches(
    model: torch.nn.Module, studies: Dataset, batch_size: int, num_workers: int = 0
) -> Iterator[dict[str, Any]]:
    """The batches of one pass over ``studies`` in dataset order, their tensors on ``model``'s
    device, with ``model`` in eval mode for the pass (its mode restored afterwards, also when the
    caller stops early). The pass a fit-end stage reads the training studies with."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for batch in make_dataloader(studies, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            yield {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    finally:
        model.train(was_training)


class BestCheckpointStage(L.Callback):
    """A step run once at the end of ``fit`` on the weights of ``run``'s best checkpoint.

    On rank zero: the best checkpoint is loaded into the module (strict), :meth:`run_stage` changes
    the module and returns the state-dict entries it changed, and those are written into the
    checkpoint atomically; every rank then waits at a barrier named :attr:`name`. A run killed during
    the stage keeps its old checkpoint and no ``training_done.json``; run again, it resumes the
    finished fit and runs the stage again from the same weights, so a stage that depends only on
    them (fixed order, seeded) writes the same result.
    """

    name = "best_checkpoint_stage"

    def __init__(self, run: RunDir) -> None:
        self.run = run

    def run_stage(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            path = self.run.model_checkpoint()
            state = read_checkpoint(path)
            pl_module.load_state_dict(state["state_dict"], strict=True)
            for name, tensor in self.run_stage(pl_module).items():
                state["state_dict"][name] = tensor.detach().cpu()
            write_checkpoint_atomic(state, path)
        trainer.strategy.barrier(self.name)


def module_from_checkpoint(
    cls: type[ModuleT], path: str | Path, map_location: str | torch.device = "cpu"
) -> ModuleT:
    """``cls(**hyper_parameters)`` with the checkpoint's weights loaded (strict), on ``map_location``.

    Raises:
        UnreadableFileError: the hyper-parameters do not build a ``cls``, or its parameters differ
            from the checkpoint's (names or shapes).
    """
    state = read_checkpoint(path)
    hparams = state.get("hyper_parameters")
    if not isinstance(hparams, Mapping):
        raise UnreadableFileError(
            f"{path}: the checkpoint has no hyper_parameters to rebuild a {cls.__name__} from"
        )
    hparams = without_pretrained_paths(hparams)
    with torch.device("meta"):
        layout = _build(cls, hparams, path)
    # weights saved before the model's calibration was persistent: the identity (models/calibration.py)
    weights = fill_missing_calibration(dict(state["state_dict"]), layout)
    _check_layout(layout.state_dict(), weights, path, variable=variable_shape_buffers(layout))
    module = _build(cls, hparams, path)
    module.load_state_dict(weights, strict=True)
    return module.to(map_location)


def without_pretrained_paths(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` with every model part's ``pretrained_path`` cleared, wherever it stands in the config
    (``model.image_encoder`` of a training config, ``question_encoder`` of a task config).

    The checkpoint holds all the weights, so a part's initial weights file is not needed
    (and is usually absent on the machine a run folder was sent to); nor is a file read on a
    checkpoint's say-so.
    """
    config = hparams.get("config")
    if not isinstance(config, Mapping):
        return dict(hparams)
    return {**hparams, "config": _without_pretrained_paths(config)}


def _without_pretrained_paths(node: Any) -> Any:
    if not isinstance(node, Mapping):
        return node
    return {
        key: None if key == "pretrained_path" else _without_pretrained_paths(value)
        for key, value in node.items()
    }


def _build(cls: type[ModuleT], hparams: Mapping[str, Any], path: str | Path) -> ModuleT:
    try:
        return cls(**hparams)
    except (TypeError, ValueError, KeyError) as err:
        raise UnreadableFileError(
            f"{path}: its hyper_parameters do not describe a {cls.__name__}: {err}"
        ) from None


def variable_shape_buffers(module: torch.nn.Module) -> set[str]:
    """State-dict names of the buffers whose shape the checkpoint decides (a submodule lists them
    in ``variable_shape_buffers`` and checks them itself on load, e.g. the report bank)."""
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        for name in getattr(sub, "variable_shape_buffers", ())
    }


def _check_layout(
    expected: Mapping[str, torch.Tensor],
    weights: Mapping[str, Any],
    path: str | Path,
    variable: Collection[str] = (),
) -> None:
    """Same parameter names and shapes in the (meta) module and in the checkpoint (only names and
    tensor-ness for the ``variable`` ones)."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UnreadableFileError(
            f"{path}: the weights do not match the model its hyper_parameters describe "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
            "was it written by another medmodal version?"
        )
    for name, tensor in expected.items():
        value = weights[name]
        if not torch.is_tensor(value) or (name not in variable and tuple(value.shape) != tuple(tensor.shape)):
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise UnreadableFileError(
                f"{path}: weight {name} has shape {shape}, the model needs {tuple(tensor.shape)}"
            )


def resume_checkpoint(run: RunDir) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint a resumed training starts from and its contents, or None for a fresh run.

    ``last.ckpt`` when readable; when it is damaged (truncated copy, disk full) ``best.ckpt``
    with a warning: training restarts from the end of the best epoch and redoes the epochs
    after it (every epoch's data order and random draws depend only on the seed and the
    epoch, so the result is the same). A checkpoint that would unpickle code is refused,
    never skipped.

    Raises:
        UnsafeFileError: ``last.ckpt`` (or ``best.ckpt``) holds arbitrary Python objects.
        UnreadableFileError: neither checkpoint is readable; the message says how to start over.
    """
    last, best = run.last_checkpoint, run.best_checkpoint
    if not last.exists():
        return None
    try:
        return last, read_checkpoint(last)
    except UnreadableFileError as err:
        if not best.exists():
            raise UnreadableFileError(
                f"cannot resume: {err}; no best.ckpt to fall back on. {_START_OVER}"
            ) from None
        try:
            state = read_checkpoint(best)
        except UnreadableFileError as best_err:
            raise UnreadableFileError(f"cannot resume: {err}; and {best_err}. {_START_OVER}") from None
        log.warning("%s; resuming from %s (epoch %s) instead", err, best, state.get("epoch"))
        return best, state


_START_OVER = "Start over with --force (deletes the run's checkpoints and logs) or train into another --out"


def run_checkpoints(run: RunDir, monitor: str, mode: str) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """``best.ckpt`` (by ``monitor``) and ``last.ckpt`` (the end of every epoch) of a run folder.

    Two callbacks because Lightning's ``save_last=True`` rewrites ``last.ckpt`` only when a new
    best is saved: after an epoch that did not improve, a resumed run would restart from the
    best epoch, not the last one. Lightning runs checkpoint callbacks after the others, and
    ``last`` after ``best``, so ``last.ckpt`` holds the early-stopping and best-score state of
    its epoch.
    """
    best = ModelCheckpoint(
        dirpath=run.checkpoints, filename=run.best_checkpoint.stem, monitor=monitor, mode=mode, save_top_k=1,
        save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip
    last = ModelCheckpoint(
        dirpath=run.checkpoints, filename=run.last_checkpoint.stem, monitor=None, save_top_k=1,
        every_n_epochs=1, save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
    )  # fmt: skip
    return best, last
