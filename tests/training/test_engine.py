"""The engine every run goes through: config check, rank-zero run files, log folders, DDP strategy, optimiser."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.strategies import DDPStrategy

from medmodal.config import write_config_atomic
from medmodal.runs import RunDir
from medmodal.tasks.config import VQAConfig, load_task_config, with_overrides
from medmodal.training.engine import (
    PreparedRun,
    RunConflictError,
    check_same_config,
    lightning_strategy,
    log_version,
)
from medmodal.training.optim import adamw_one_cycle


def test_a_changed_epoch_count_is_refused_naming_train_epochs(tmp_path):
    run = RunDir.at(tmp_path)
    write_config_atomic(tiny_config(**{"train.epochs": 2}), run.config)
    check_same_config(
        run, tiny_config(**{"train.epochs": 2, "train.devices": 2}), None
    )  # where it runs may change
    with pytest.raises(RunConflictError, match=r"train.epochs 2 -> 3"):
        check_same_config(run, tiny_config(**{"train.epochs": 3}), None)


def test_task_configs_are_checked_the_same_way(tmp_path):
    run = RunDir.at(tmp_path)
    write_config_atomic(VQAConfig(), run.config)

    def read(path):
        return load_task_config(VQAConfig, path)

    check_same_config(run, VQAConfig(), None, read)
    with pytest.raises(RunConflictError, match="train.epochs 20 -> 5"):
        check_same_config(run, with_overrides(VQAConfig(), {"train.epochs": 5}), None, read)


def test_run_files_are_written_by_rank_zero_only(tmp_path, monkeypatch):
    prepared = PreparedRun(RunDir.at(tmp_path / "run"))
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    prepared.write_files(lambda run: (run.root / "written").write_text("x"))
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    prepared.write_files(lambda run: (run.root / "written").write_text("x"))
    assert (tmp_path / "run" / "written").exists()


def test_each_resume_logs_into_a_new_folder(tmp_path):
    run = RunDir.at(tmp_path)
    assert log_version(run, resumed=False) == ""
    assert log_version(run, resumed=True) == "-resumed-1"
    (run.logs / "csv-resumed-1").mkdir(parents=True)
    assert log_version(run, resumed=True) == "-resumed-2"


def test_plain_ddp_finds_unused_parameters():
    strategy = lightning_strategy("ddp")
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["find_unused_parameters"] is True
    assert lightning_strategy("auto") == "auto"


def test_one_cycle_peaks_at_each_groups_learning_rate():
    head, body = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    groups = [
        {"params": list(body.parameters()), "lr": 0.01},
        {"params": list(head.parameters()), "lr": 0.05},
    ]
    optimisation = adamw_one_cycle(groups, tiny_config().train, total_steps=20)
    optimizer, scheduler = optimisation["optimizer"], optimisation["lr_scheduler"]["scheduler"]
    peaks = [0.0, 0.0]
    for _ in range(20):
        peaks = [max(p, g["lr"]) for p, g in zip(peaks, optimizer.param_groups)]
        optimizer.step()
        scheduler.step()
    assert peaks == pytest.approx([0.01, 0.05], rel=1e-3)
    assert optimisation["lr_scheduler"]["interval"] == "step"


def test_an_unreadable_resumes_file_is_a_run_error_naming_it(tmp_path):
    from medmodal.errors import RunError
    from medmodal.training.engine import read_resumes

    run = RunDir.at(tmp_path)
    run.resumes.write_text("{not json")
    with pytest.raises(RunError, match="resumes.json: not readable JSON"):
        read_resumes(run)
