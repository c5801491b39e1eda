"""Training survives a SIGKILL (atomic checkpoints, resume) and runs data-parallel on 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from medmodal.config import save_config
from medmodal.safeio import load_torch_file

from .helpers import TWO_CPU_PROCESSES, train_command


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


def _config_file(tmp_path: Path, **extra) -> Path:
    from conftest import tiny_config

    path = tmp_path / "config.yaml"
    save_config(tiny_config(**extra), path)
    return path


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training exited early ({proc.returncode}) before writing {path}"
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tiny_data, tmp_path):
    """SIGKILLed mid-training, resumed in a new process: the same model and score as without the kill."""
    config = _config_file(tmp_path, **{"train.epochs": 4})
    run = tmp_path / "run"
    command = train_command(tiny_data, run, config)
    last = run / "checkpoints" / "last.ckpt"

    first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(last, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (run / "training_done.json").exists()
    # Lightning writes checkpoints through an fsspec transaction (temp file + rename): never half-written.
    step_at_kill = load_torch_file(last)["global_step"]
    steps_per_epoch = 6  # 84 training studies, batch 16
    assert step_at_kill % steps_per_epoch == 0 and 0 < step_at_kill < 4 * steps_per_epoch

    second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming from {last}" in second.stderr
    assert f"step {step_at_kill})" in second.stderr
    done = json.loads((run / "training_done.json").read_text())
    assert done["epochs_run"] == 4
    assert done["resumed"] is True and done["resumes"] == 1
    # the second process continued (its first logged epoch is after the checkpoint's), and the
    # metrics logged before the kill are kept beside the resumed run's
    import csv

    resumed_rows = list(csv.DictReader((run / "logs" / "csv-resumed-1" / "metrics.csv").open()))
    assert min(int(row["epoch"]) for row in resumed_rows) >= step_at_kill // steps_per_epoch
    assert (run / "logs" / "csv" / "hparams.yaml").exists()

    # the same training without the kill (in this process) ends with the same weights and score
    from medmodal.config import load_config
    from medmodal.training.trainer import train

    whole = train(tiny_data, load_config(config), tmp_path / "whole")
    assert done["best_score"] == pytest.approx(whole.best_score, abs=1e-6)
    resumed_weights = load_torch_file(last)["state_dict"]
    whole_weights = load_torch_file(tmp_path / "whole" / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in whole_weights.items():
        torch.testing.assert_close(resumed_weights[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tiny_data, tmp_path):
    # OGM on: its modality scores are averaged across the two processes (strategy.reduce)
    config = _config_file(tmp_path, **{"train.epochs": 1, "model.heads.generation": False,
                                       "train.modality_balance": "ogm", "train.log_every_n_steps": 1})  # fmt: skip
    run = tmp_path / "ddp"
    command = train_command(tiny_data, run, config, *TWO_CPU_PROCESSES)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    done = json.loads((run / "training_done.json").read_text())
    assert done["epochs_run"] == 1
    state = load_torch_file(run / "checkpoints" / "last.ckpt")
    # 84 training studies, batch 16 per process, 2 processes -> ceil(84 / 2 / 16) = 3 steps, not 6
    assert state["global_step"] == 3
    assert "train/ogm_k_image" in (run / "logs" / "csv" / "metrics.csv").read_text()


@pytest.mark.slow
def test_ddp_fills_the_report_bank_once_on_rank_zero(tiny_data, tmp_path):
    """report_conditioning.reports: retrieved under DDP: rank zero fills the bank of best.ckpt with
    every training report (not each process's half) while the other rank waits at the barrier."""
    config = _config_file(tmp_path, **{"train.epochs": 1, "model.heads.generation": True,
                                       "model.report_conditioning.reports": "retrieved"})  # fmt: skip
    run = tmp_path / "ddp_bank"
    command = train_command(tiny_data, run, config, *TWO_CPU_PROCESSES)
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    weights = load_torch_file(run / "checkpoints" / "best.ckpt")["state_dict"]
    # tiny_data: 84 training studies, every one with a report
    assert weights["model.report_bank.ids"].shape[0] == 84
    assert output.count("report bank: 84 training reports") == 1
