"""Run folders and atomic file writes: what a training run writes, and how later commands read it back.

The lowest layer but :mod:`medmodal.errors`: it imports nothing else from medmodal, so every
layer may write its files with :func:`write_json_atomic` / :func:`write_text_atomic` and name
the files of a run with :class:`RunDir`.

::

    RUN/
      config.yaml           the resolved config the run used
      tokenizer.json        vocabulary built from the training reports
      labels.json           label order + training-set prevalence
      data_summary.json     manifest summary, including every skipped bad row
      checkpoints/          best.ckpt (by the monitored validation metric), last.ckpt (resume)
      logs/csv/metrics.csv  per-step / per-epoch metrics;  logs/tensorboard/  the same for TensorBoard
      logs/csv-resumed-N/   the same after the N-th resume (earlier logs are never overwritten)
      resumes.json          one entry per resume (time, checkpoint, epoch); absent if never resumed
      training_done.json    written when training finished (epochs run, best score, time, resumed);
                            kept as it is when a finished run is trained again
      metrics.json          written by ``medmodal evaluate``
      predictions/<split>.jsonl  per-study predictions written by ``medmodal evaluate``
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmodal.errors import RunNotFoundError


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temporary file and an atomic rename: a killed process never leaves half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` via a temporary file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value: Any) -> Any:
    """numpy / torch scalars and arrays as Python numbers and lists; paths as strings."""
    if hasattr(value, "tolist"):  # a 0-d array or a numpy scalar gives a plain number
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass(frozen=True)
class RunDir:
    """Paths inside a run folder."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> RunDir:
        return cls(Path(path).resolve())

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer.json"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def data_summary(self) -> Path:
        return self.root / "data_summary.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def done(self) -> Path:
        return self.root / "training_done.json"

    @property
    def resumes(self) -> Path:
        return self.root / "resumes.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def predictions(self, split: str) -> Path:
        return self.root / "predictions" / f"{split}.jsonl"

    def require_trained(self) -> None:
        """Raise a clear error unless this folder holds a finished training run."""
        if not self.root.is_dir():
            raise RunNotFoundError(f"run folder not found: {self.root}")
        for needed in (self.config, self.tokenizer, self.labels):
            if not needed.exists():
                raise RunNotFoundError(f"{self.root} is not a medmodal run folder (missing {needed.name})")
        if not self.model_checkpoint().exists():
            raise RunNotFoundError(
                f"{self.root} has no checkpoint yet: train it first (medmodal train ... --out {self.root})"
            )

    def model_checkpoint(self) -> Path:
        """The checkpoint inference uses: the best one, else the last one."""
        return self.best_checkpoint if self.best_checkpoint.exists() else self.last_checkpoint

    def load_labels(self) -> list[str]:
        return json.loads(self.labels.read_text())["labels"]

    def training_data(self) -> str:
        """The data folder or manifest the run was trained on (as recorded in ``data_summary.json``)."""
        return json.loads(self.data_summary.read_text())["data"]
