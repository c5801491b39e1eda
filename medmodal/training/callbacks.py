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
                         extra: Sequence[L.Callback] = ()) -> list[L.Callback]:  # fmt: skip
    """Labels and vocabulary stored in every checkpoint (:mod:`medmodal.training.artifacts`), weight
    averaging (``train.weight_averaging``, :mod:`medmodal.training.weight_averaging`), the caller's ``extra`` callbacks, then early stopping on ``train.monitor`` (when its patience is set)."""
    callbacks = [StoreArtifacts(ModelArtifacts(labels, tokenizer)), *weight_averaging_callbacks(t), *extra]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor=t.monitor, mode="max", patience=t.early_stopping_patience))
    return callbacks
