"""What a checkpoint carries besides the weights, so that it predicts on its own.

A run folder keeps the label order in ``labels.json``, the vocabulary in ``tokenizer.json`` and
the post-hoc calibration in ``calibration.json``. Checkpoints written by ``medmodal train`` also
hold the labels and the vocabulary under the key :data:`ARTIFACTS_KEY`, as plain data (a list of
str and the tokenizer's JSON text), so they load with ``torch.load(weights_only=True)``; the
calibration is in the weights (the model's persistent calibration buffers), its per-label decision
thresholds here. ``medmodal.load(checkpoint_file)`` needs nothing else; checkpoints written
before these were stored load from their run folder only.

Layout of ``checkpoint[ARTIFACTS_KEY]``::

    {"format": 1, "labels": [str, ...], "tokenizer": str (HF tokenizers JSON),
     "thresholds": [float, ...] or None, "calibrated": bool}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from medmodal.data.tokenizer import ReportTokenizer
from medmodal.safeio import UnreadableFileError

ARTIFACTS_KEY = "medmodal"
FORMAT = 1
MAX_TOKENIZER_CHARS = 64 * 1024 * 1024  # a word-level vocabulary of millions of words is far below


@dataclass
class ModelArtifacts:
    """Label names (logit order), tokenizer, and the calibration's decision thresholds of a model."""

    labels: list[str]
    tokenizer: ReportTokenizer
    thresholds: list[float] | None = None
    calibrated: bool = False

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain data for ``checkpoint[ARTIFACTS_KEY]`` (loads with ``weights_only=True``)."""
        return {
            "format": FORMAT,
            "labels": list(self.labels),
            "tokenizer": self.tokenizer.to_json(),
            "thresholds": None if self.thresholds is None else [float(t) for t in self.thresholds],
            "calibrated": bool(self.calibrated),
        }

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], path: str | Path) -> ModelArtifacts | None:
        """The artifacts stored in a checkpoint dict, or None when it has none (an older checkpoint).

        Raises:
            UnreadableFileError: they are present but malformed (the message names the field).
        """
        stored = state.get(ARTIFACTS_KEY)
        if stored is None:
            return None
        if not isinstance(stored, Mapping) or stored.get("format") != FORMAT:
            raise UnreadableFileError(f"{path}: '{ARTIFACTS_KEY}' is not medmodal's format {FORMAT}")
        labels = stored.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(n, str) for n in labels):
            raise UnreadableFileError(f"{path}: '{ARTIFACTS_KEY}.labels' is not a list of label names")
        return cls(labels=list(labels), tokenizer=_tokenizer(stored.get("tokenizer"), path),
                   thresholds=_thresholds(stored.get("thresholds"), len(labels), path),
                   calibrated=bool(stored.get("calibrated", False)))  # fmt: skip


def _tokenizer(text: Any, path: str | Path) -> ReportTokenizer:
    if not isinstance(text, str) or len(text) > MAX_TOKENIZER_CHARS:
        raise UnreadableFileError(f"{path}: '{ARTIFACTS_KEY}.tokenizer' is not a tokenizer's JSON text")
    try:
        return ReportTokenizer.from_json(text)
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises plain Exception
        raise UnreadableFileError(f"{path}: '{ARTIFACTS_KEY}.tokenizer' cannot be read: {err}") from None


def _thresholds(values: Any, count: int, path: str | Path) -> list[float] | None:
    if values is None:
        return None
    if (
        not isinstance(values, list)
        or len(values) != count
        or not all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in values)
    ):
        raise UnreadableFileError(
            f"{path}: '{ARTIFACTS_KEY}.thresholds' must be one value in [0, 1] per label"
        )
    return [float(t) for t in values]


class StoreArtifacts(L.Callback):
    """Writes :class:`ModelArtifacts` into every checkpoint Lightning saves."""

    def __init__(self, artifacts: ModelArtifacts):
        self.artifacts = artifacts

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[ARTIFACTS_KEY] = self.artifacts.to_checkpoint()
