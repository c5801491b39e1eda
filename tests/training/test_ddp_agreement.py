"""Data-parallel training on 2 CPU processes (gloo) learns what one process learns: the same global
batch (2 x 16 vs 1 x 32), the same steps, the same seed -> the same validation classification loss within a stated
tolerance. Not bit-identical: each process normalises its BatchNorm batches over its 16 samples (no
SyncBatchNorm) and DistributedSampler deals the seeded order out across the ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from medmodal.config import save_config

from .helpers import TWO_CPU_PROCESSES, train_command

# After 3 epochs the two runs' validation classification loss agrees within 5 % (relative); measured
# 0.926 vs 0.931 (0.5 %) with the coord_cnn + bilstm_attention + gated defaults and the dense box head.
# The dense localization loss is left out: it is normalised by each process's own number of box centres
# (no cross-process reduction, which would hang when one rank skips the loss), so 2 x 16 is not 1 x 32
# there (measured 3.06 vs 3.69 after 3 epochs; docs/distributed.md). Macro AUROC
# is reported, not compared: on 18 validation studies one swapped positive/negative pair moves it by
# 0.05-0.1 (measured differences 0.067 and 0.100), so the loss, a continuous figure, is the test.
LOSS_RTOL = 0.05
EPOCHS = 3


def _last_val(run: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader((run / "logs" / "csv" / "metrics.csv").open()) if r.get("val/loss")]
    last = max(rows, key=lambda r: int(r["epoch"]))
    assert int(last["epoch"]) == EPOCHS - 1
    return {"loss": float(last["val/loss_classification"]), "auroc": float(last["val/auroc_macro"])}


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_data, tmp_path):
    from conftest import tiny_config

    from medmodal.config import apply_overrides
    from medmodal.training.trainer import train

    base = tiny_config(
        **{"train.epochs": EPOCHS, "model.heads.generation": False, "train.log_every_n_steps": 1}
    )
    single = train(tiny_data, apply_overrides(base, {"train.batch_size": 32}), tmp_path / "one")
    assert single.epochs_run == EPOCHS

    config = tmp_path / "ddp.yaml"
    save_config(apply_overrides(base, {"train.batch_size": 16}), config)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = train_command(tiny_data, tmp_path / "two", config, *TWO_CPU_PROCESSES)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((tmp_path / "two" / "training_done.json").read_text())["epochs_run"] == EPOCHS

    one, two = _last_val(tmp_path / "one"), _last_val(tmp_path / "two")
    first = _first_val_loss(tmp_path / "one")
    print(f"1 process: {one}; 2 processes: {two}; first-epoch val loss {first:.4f}")
    assert two["loss"] == pytest.approx(one["loss"], rel=LOSS_RTOL)
    # not a vacuous agreement: both runs learned (validation loss fell from the first epoch's)
    assert one["loss"] < first and two["loss"] < _first_val_loss(tmp_path / "two")


def _first_val_loss(run: Path) -> float:
    rows = [r for r in csv.DictReader((run / "logs" / "csv" / "metrics.csv").open()) if r.get("val/loss")]
    return float(min(rows, key=lambda r: int(r["epoch"]))["val/loss_classification"])
