"""``medmodal train`` started in a new Python process, as the resume and data-parallel tests run it."""

from __future__ import annotations

import sys
from pathlib import Path

CLI = [sys.executable, "-m", "medmodal.cli.main"]
# Data-parallel training on two CPU processes (gloo)
TWO_CPU_PROCESSES = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]


def train_command(data: Path, out: Path, config: Path, *flags: str) -> list[str]:
    """The command line that trains ``config`` on ``data`` into the run folder ``out`` (no progress bar)."""
    run_flags = ["--data", str(data), "--out", str(out), "--config", str(config), "--no-progress"]
    return [*CLI, "train", *run_flags, *flags]
