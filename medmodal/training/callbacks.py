"""The Lightning callbacks of a supervised run (raw or prepared data) besides checkpoints and seeding."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

from medmodal.config import TrainConfig
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.training.artifacts import ModelArtifacts, StoreArtifacts
from medmodal.training.weight_averaging import weight_averaging_callbacks


def supervised_callbacks(t: TrainConfig, labels: list[str], tokenizer: ReportTokenizer,
                         extra: Sequence[L.Callback] = (), *, monitor: tuple[str, str] | None = None,
                         ) -> list[L.Callback]:  # fmt: skip
    """Labels and vocabulary stored in every checkpoint (:mod:`medmodal.training.artifacts`), weight
    averaging (``train.weight_averaging``, :mod:`medmodal.training.weight_averaging`), the caller's
    ``extra`` callbacks, then early stopping (when ``train.early_stopping_patience`` is set) on
    ``monitor`` = (metric, "max" / "min"), by default ``(train.monitor, "max")``."""
    callbacks = [StoreArtifacts(ModelArtifacts(labels, tokenizer)), *weight_averaging_callbacks(t), *extra]
    metric, mode = monitor or (t.monitor, "max")
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=metric, mode=mode, patience=t.early_stopping_patience))
    return callbacks
