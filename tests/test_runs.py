"""Run folders and atomic writes (the lowest layer: no config, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmodal.runs import RunDir, write_json_atomic, write_text_atomic


def test_json_is_written_with_numbers_arrays_and_paths(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json_atomic(path, {"score": np.float32(0.5), "counts": np.array([1, 2]), "where": Path("/a/b")})
    assert json.loads(path.read_text()) == {"score": 0.5, "counts": [1, 2], "where": "/a/b"}
    assert list(path.parent.iterdir()) == [path]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.json"
    write_text_atomic(path, "old\n")
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json_atomic(path, {"bad": object()})
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


def test_run_dir_names_the_files_of_a_run(tmp_path):
    run = RunDir.at(tmp_path / "run")
    assert run.root == (tmp_path / "run").resolve()
    assert run.config.name == "config.yaml" and run.tokenizer.name == "tokenizer.json"
    assert run.predictions("test") == run.root / "predictions" / "test.jsonl"
    assert run.model_checkpoint() == run.last_checkpoint  # no best.ckpt yet
    run.best_checkpoint.parent.mkdir(parents=True)
    run.best_checkpoint.write_bytes(b"")
    assert run.model_checkpoint() == run.best_checkpoint


def test_require_trained_names_what_is_missing(tmp_path):
    run = RunDir.at(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing config.yaml"):
        run.require_trained()
    for path in (run.config, run.tokenizer):
        path.write_text("x")
    run.labels.write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(FileNotFoundError, match="no checkpoint yet"):
        run.require_trained()
    assert run.load_labels() == ["a", "b"]


def test_training_data_is_the_path_recorded_in_the_data_summary(tmp_path):
    run = RunDir.at(tmp_path)
    write_json_atomic(run.data_summary, {"data": "/data/cohort", "n_studies": 3})
    assert run.training_data() == "/data/cohort"
