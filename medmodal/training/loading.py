"""Load a trained run folder back into memory for evaluation, prediction, explanation and serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medmodal.config import Config
from medmodal.data.manifest import Manifest
from medmodal.data.pipeline import read_dataset, read_split
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study
from medmodal.models.calibration import CALIBRATION_FILE, PlattScaling
from medmodal.models.multimodal import MultimodalModel
from medmodal.runs import RunDir
from medmodal.safeio import UnreadableFileError
from medmodal.training.artifacts import ModelArtifacts
from medmodal.training.checkpoints import module_from_checkpoint, read_checkpoint
from medmodal.training.module import MultimodalModule


@dataclass
class TrainedRun:
    """A run folder loaded for inference: config, label order, tokenizer and the model in eval mode."""

    run: RunDir
    config: Config
    labels: list[str]
    tokenizer: ReportTokenizer
    model: MultimodalModel
    checkpoint: Path
    calibrated: bool = False  # RUN/calibration.json applied to the classification logits
    thresholds: list[float] | None = None  # per-label decision thresholds from it, if chosen

    def decision_thresholds(self) -> float | list[float]:
        """Per-label thresholds of the calibration if it chose them, else ``evaluate.threshold``."""
        return self.thresholds if self.thresholds is not None else self.config.evaluate.threshold

    def read_data(self, data: str | Path) -> Manifest:
        """``data`` read with the run's config and labelled in the run's label order."""
        return read_dataset(data, self.config, labels=self.labels)

    def studies(self, data: str | Path, split: str) -> list[Study]:
        """The studies of ``split`` of ``data`` as the run sees them (:class:`~medmodal.data.pipeline.EmptySplitError`
        if there are none)."""
        return read_split(data, self.config, self.labels, split)


def load_trained(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    *,
    apply_calibration: bool = True,
) -> TrainedRun:
    """Read ``run_dir`` (see :mod:`medmodal.runs`) and rebuild its model from the best checkpoint.

    With ``apply_calibration`` (default) a ``RUN/calibration.json`` written by ``medmodal
    calibrate`` is applied to the model's classification logits; otherwise, or without that file,
    the model is uncalibrated (the identity), whatever calibration its checkpoint holds.

    The checkpoint is read with ``weights_only=True`` (:mod:`medmodal.training.checkpoints`):
    one whose pickle would run code is refused with :class:`~medmodal.safeio.UnsafeFileError`.

    ``run_dir`` may also be a checkpoint file alone (:func:`load_checkpoint_file`).
    """
    if Path(run_dir).is_file() and checkpoint is None:
        return load_checkpoint_file(run_dir, device)
    run = RunDir.at(run_dir)
    run.require_trained()
    ckpt = Path(checkpoint) if checkpoint else run.model_checkpoint()
    module = module_from_checkpoint(MultimodalModule, ckpt, map_location=device)  # never unpickles code
    model = module.model.to(device).eval()
    labels = run.load_labels()
    tokenizer = ReportTokenizer.load(run.tokenizer)
    _check_matches_run(module, ckpt, labels, tokenizer)
    calibration_path = run.root / CALIBRATION_FILE
    calibrated = apply_calibration and calibration_path.exists()
    thresholds = None
    if calibrated:
        scaling = PlattScaling.load(calibration_path)
        if scaling.labels != labels:
            raise UnreadableFileError(
                f"{calibration_path}: labels {scaling.labels} differ from the run's {labels}; rerun medmodal calibrate"
            )
        model.set_calibration(scaling.scale, scaling.bias)
        thresholds = scaling.thresholds
    else:  # the run folder's calibration.json decides, whatever the checkpoint's buffers hold
        model.set_calibration(torch.ones(len(labels)), torch.zeros(len(labels)))
    return _trained_run(run, ckpt, module, ModelArtifacts(labels, tokenizer, thresholds, calibrated))


def _trained_run(
    run: RunDir, checkpoint: Path, module: MultimodalModule, artifacts: ModelArtifacts
) -> TrainedRun:
    """``module``'s model (already in eval mode on its device) with the label order, tokenizer and
    calibration of ``artifacts``."""
    return TrainedRun(
        run=run,
        config=module.config,
        model=module.model,
        checkpoint=checkpoint,
        labels=artifacts.labels,
        tokenizer=artifacts.tokenizer,
        calibrated=artifacts.calibrated,
        thresholds=artifacts.thresholds,
    )


def _check_matches_run(
    module: MultimodalModule, checkpoint: Path, labels: list[str], tokenizer: ReportTokenizer
) -> None:
    """The checkpoint's label count and vocabulary size are those of the run folder's files."""
    hparams = module.hparams
    if int(hparams["num_labels"]) != len(labels):
        raise UnreadableFileError(
            f"{checkpoint}: the model predicts {hparams['num_labels']} labels, the run's labels.json lists {len(labels)}"
        )
    if int(hparams["vocab_size"]) != tokenizer.vocab_size:
        raise UnreadableFileError(
            f"{checkpoint}: the model's vocabulary has {hparams['vocab_size']} tokens, "
            f"the run's tokenizer.json {tokenizer.vocab_size}"
        )


def load_checkpoint_file(path: str | Path, device: str | torch.device = "cpu") -> TrainedRun:
    """A checkpoint file on its own: labels, tokenizer and calibration thresholds from the data
    stored in it (:mod:`medmodal.training.artifacts`), the calibration from its weights.
    ``TrainedRun.run`` is the checkpoint's folder.

    Raises:
        UnreadableFileError: a checkpoint written before medmodal stored these (load its run folder),
            or one whose stored labels / vocabulary do not fit its model.
    """
    path = Path(path)
    artifacts = ModelArtifacts.from_checkpoint(read_checkpoint(path), path)
    if artifacts is None:
        raise UnreadableFileError(
            f"{path}: holds no label names and tokenizer (written before checkpoints carried them); "
            "load its run folder instead"
        )
    module = module_from_checkpoint(MultimodalModule, path, map_location=device)  # never unpickles code
    _check_matches_run(module, path, artifacts.labels, artifacts.tokenizer)
    module.model.to(device).eval()
    return _trained_run(RunDir.at(path.parent), path, module, artifacts)
