"""Run folders from someone else: checkpoints never run code, damaged files have a way out.

A poisoned checkpoint here is a real ``torch.save`` whose pickle calls ``os.system`` to create
a marker file: loading must refuse it with an error naming the file, and the marker must not
exist afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from medmodal.config import ConfigError
from medmodal.safeio import UnreadableFileError, UnsafeFileError, load_torch_file
from medmodal.training.checkpoints import module_from_checkpoint
from medmodal.training.loading import load_trained
from medmodal.training.module import MultimodalModule
from medmodal.training.trainer import train


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def poison(checkpoint: Path, marker: Path) -> None:
    """Rewrite ``checkpoint`` as the same dict plus an object whose unpickling runs a command."""
    state = load_torch_file(checkpoint)
    state["callbacks"] = {"Innocent": _RunsCode(marker)}
    torch.save(state, checkpoint)


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the session's tiny trained run (2 epochs)."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


# ------------------------------------------------------------------- code in checkpoints
def test_the_poisoned_checkpoint_does_run_code_when_unpickled(run_copy, tmp_path):
    """The test's premise: the file really carries a payload (loaded unsafely on purpose)."""
    marker = tmp_path / "ran"
    poison(run_copy / "checkpoints" / "best.ckpt", marker)
    torch.load(run_copy / "checkpoints" / "best.ckpt", weights_only=False)
    assert marker.exists()


def test_predict_and_evaluate_refuse_a_checkpoint_that_runs_code(run_copy, tmp_path):
    marker = tmp_path / "ran"
    best = run_copy / "checkpoints" / "best.ckpt"
    poison(best, marker)
    with pytest.raises(UnsafeFileError, match=rf"{best}: refused .*posix.system"):
        load_trained(run_copy)  # predict, evaluate, calibrate, explain and serve load through it
    from medmodal.serving.predictor import Predictor

    with pytest.raises(UnsafeFileError):
        Predictor.from_run(run_copy)
    assert not marker.exists()


def test_evaluate_cli_reports_the_refusal_in_one_line(run_copy, tiny_data, tmp_path, capsys):
    from medmodal.cli.main import main

    marker = tmp_path / "ran"
    poison(run_copy / "checkpoints" / "best.ckpt", marker)
    assert main(["evaluate", str(run_copy), "--data", str(tiny_data)]) == 2
    assert "refused to load this checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_resume_refuses_a_last_checkpoint_that_runs_code(run_copy, tiny_data, tmp_path):
    marker = tmp_path / "ran"
    last = run_copy / "checkpoints" / "last.ckpt"
    (run_copy / "training_done.json").unlink()  # an interrupted run: training resumes from last.ckpt
    poison(last, marker)
    with pytest.raises(UnsafeFileError, match=rf"{last}: refused"):
        train(tiny_data, tiny_config(), run_copy)
    assert not marker.exists()
    assert last.exists()  # refused, not deleted


def test_lightnings_own_resume_load_unpickles_no_objects(run_copy, tiny_data, tmp_path, monkeypatch):
    """Second line of defence: even past the check, ``trainer.fit(ckpt_path=...)`` loads weights only."""
    import medmodal.training.engine as engine_module

    marker = tmp_path / "ran"
    last = run_copy / "checkpoints" / "last.ckpt"
    (run_copy / "training_done.json").unlink()
    poison(last, marker)
    monkeypatch.setattr(engine_module, "resume_checkpoint", lambda run: (last, {"global_step": 0}))
    with pytest.raises(pickle.UnpicklingError):
        train(tiny_data, tiny_config(), run_copy)
    assert not marker.exists()


def test_pretraining_checkpoints_are_read_safely(run_copy, tmp_path):
    from medmodal.training.pretrain import ContrastiveModule

    marker = tmp_path / "ran"
    poison(run_copy / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(UnsafeFileError):  # save_encoders and load_pretrained_run both read this way
        module_from_checkpoint(ContrastiveModule, run_copy / "checkpoints" / "last.ckpt")
    assert not marker.exists()


def test_hyper_parameters_of_a_huge_model_are_refused_before_building_it(run_copy):
    best = run_copy / "checkpoints" / "best.ckpt"
    state = load_torch_file(best)
    state["hyper_parameters"]["vocab_size"] = 10**10  # an embedding of ~1 TB if it were built
    torch.save(state, best)
    with pytest.raises(UnreadableFileError, match="shape"):
        module_from_checkpoint(MultimodalModule, best)


def test_a_shared_run_loads_without_the_initial_weights_files_it_was_trained_from(run_copy, tmp_path):
    """A part's ``pretrained_path`` (weights before training) is neither needed nor read: the
    checkpoint holds every weight, and the file is not on the machine the run was sent to."""
    best = run_copy / "checkpoints" / "best.ckpt"
    state = load_torch_file(best)
    state["hyper_parameters"]["config"]["model"]["image_encoder"]["pretrained_path"] = str(
        tmp_path / "absent.pt"
    )
    torch.save(state, best)
    trained = load_trained(run_copy)
    assert trained.model.image_encoder is not None
    for name, value in trained.model.state_dict().items():
        assert torch.equal(value, state["state_dict"][f"model.{name}"]), name


def test_a_checkpoint_from_another_run_folder_is_refused(run_copy, tmp_path):
    labels = json.loads((run_copy / "labels.json").read_text())
    labels["labels"] = labels["labels"][:-1]
    (run_copy / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(UnreadableFileError, match="labels"):
        load_trained(run_copy)


# ------------------------------------------------------------------- damaged files
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_inference_names_a_truncated_checkpoint(run_copy):
    best = run_copy / "checkpoints" / "best.ckpt"
    _truncate(best)
    with pytest.raises(UnreadableFileError, match=rf"{best}: not a readable checkpoint \(truncated"):
        load_trained(run_copy)


@pytest.mark.slow
def test_truncated_last_checkpoint_resumes_from_best_with_a_warning(tiny_data, tmp_path, monkeypatch, caplog):
    from medmodal.training.module import MultimodalModule

    config = tiny_config(
        **{"train.epochs": 3, "train.limit_train_batches": 2, "model.heads.generation": False}
    )
    run = tmp_path / "run"

    def killed(self):
        if self.current_epoch == 2:
            raise KeyboardInterrupt  # Lightning's graceful shutdown; the process is gone after it

    with monkeypatch.context() as patch:
        patch.setattr(MultimodalModule, "on_train_epoch_start", killed)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            train(tiny_data, config, run)
    last = run / "checkpoints" / "last.ckpt"
    _truncate(last)
    with caplog.at_level(logging.WARNING, logger="medmodal.training.checkpoints"):
        result = train(tiny_data, config, run)
    assert "not a readable checkpoint" in caplog.text and "best.ckpt" in caplog.text
    assert result.epochs_run == 3
    assert load_torch_file(last)["epoch"] == 2  # rewritten whole at the end of the last epoch
    assert json.loads((run / "training_done.json").read_text())["resumes"] == 1


def test_no_readable_checkpoint_is_a_clear_error_that_deletes_nothing(run_copy, tiny_data):
    (run_copy / "training_done.json").unlink()
    for name in ("last.ckpt", "best.ckpt"):
        _truncate(run_copy / "checkpoints" / name)
    with pytest.raises(UnreadableFileError, match="cannot resume.*--force"):
        train(tiny_data, tiny_config(), run_copy)
    assert (run_copy / "checkpoints" / "last.ckpt").exists() and (
        run_copy / "checkpoints" / "best.ckpt"
    ).exists()


def test_truncated_config_is_recovered_from_the_checkpoint(run_copy, tiny_data, caplog):
    config_file = run_copy / "config.yaml"
    whole = config_file.read_text()
    _truncate(config_file)
    with caplog.at_level(logging.WARNING, logger="medmodal.training.trainer"):
        result = train(tiny_data, tiny_config(), run_copy)  # finished run: nothing to train
    assert "matches, continuing" in caplog.text
    assert config_file.read_text() == whole
    assert result.epochs_run == 2


def test_truncated_config_without_checkpoints_says_what_to_do(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  image_encoder: {name: [")  # cut short
    with pytest.raises(ConfigError, match="no checkpoint yet, so nothing is lost by deleting config.yaml"):
        train(tiny_data, tiny_config(), run)


def test_another_config_is_still_refused_when_config_yaml_is_damaged(run_copy, tiny_data):
    from medmodal.training.trainer import RunConflictError

    _truncate(run_copy / "config.yaml")
    with pytest.raises(RunConflictError, match="different configuration"):
        train(tiny_data, tiny_config(**{"train.lr": 0.123}), run_copy)


def test_rerunning_a_finished_training_keeps_its_record(run_copy, tiny_data):
    done = run_copy / "training_done.json"
    before = done.read_text()
    mtime = done.stat().st_mtime_ns
    config_mtime = (run_copy / "config.yaml").stat().st_mtime_ns
    result = train(tiny_data, tiny_config(), run_copy)
    assert done.read_text() == before and done.stat().st_mtime_ns == mtime
    assert (run_copy / "config.yaml").stat().st_mtime_ns == config_mtime
    assert result.epochs_run == json.loads(before)["epochs_run"] == 2
