"""Load a trained run folder back into memory for evaluation, prediction, explanation and serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medmodal.config import Config
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.models.multimodal import MultimodalModel
from medmodal.training.module import MultimodalModule
from medmodal.training.run import RunDir


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


def load_trained(
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    checkpoint: str | Path | None = None,
    *,
    apply_calibration: bool = True,
) -> TrainedRun:
    """Read ``run_dir`` (see :mod:`medmodal.training.run`) and rebuild its model from the best checkpoint.

    With ``apply_calibration`` (default) a ``RUN/calibration.json`` written by ``medmodal
    calibrate`` is applied to the model's classification logits.
    """
    from medmodal.evaluation.calibration import CALIBRATION_FILE, PlattScaling

    run = RunDir.at(run_dir)
    run.require_trained()
    ckpt = Path(checkpoint) if checkpoint else run.model_checkpoint()
    module = MultimodalModule.load_from_checkpoint(ckpt, map_location=device, weights_only=False)
    model = module.model.to(device).eval()
    labels = run.load_labels()
    calibration_path = run.root / CALIBRATION_FILE
    calibrated = apply_calibration and calibration_path.exists()
    thresholds = None
    if calibrated:
        scaling = PlattScaling.load(calibration_path)
        if scaling.labels != labels:
            raise ValueError(f"{calibration_path}: labels {scaling.labels} differ from the run's {labels}; rerun medmodal calibrate")
        model.set_calibration(scaling.scale, scaling.bias)
        thresholds = scaling.thresholds
    return TrainedRun(
        run=run,
        config=module.config,
        labels=labels,
        tokenizer=ReportTokenizer.load(run.tokenizer),
        model=model,
        checkpoint=ckpt,
        calibrated=calibrated,
        thresholds=thresholds,
    )
