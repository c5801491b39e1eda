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


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> TrainedRun:
    """Read ``run_dir`` (see :mod:`medmodal.training.run`) and rebuild its model from the best checkpoint."""
    run = RunDir.at(run_dir)
    run.require_trained()
    ckpt = Path(checkpoint) if checkpoint else run.model_checkpoint()
    module = MultimodalModule.load_from_checkpoint(ckpt, map_location=device, weights_only=False)
    model = module.model.to(device).eval()
    return TrainedRun(
        run=run,
        config=module.config,
        labels=run.load_labels(),
        tokenizer=ReportTokenizer.load(run.tokenizer),
        model=model,
        checkpoint=ckpt,
    )
