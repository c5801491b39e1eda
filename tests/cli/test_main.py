"""``medmodal``: every command answers ``--help``; the main path synth -> train -> evaluate -> predict;
a user error is a short message and exit 2, a bug keeps its traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_config

from medmodal.cli.main import build_parser, is_user_error, main
from medmodal.config import save_config

COMMANDS = {
    "baseline", "benchmark", "calibrate", "config", "demo", "evaluate", "explain", "export", "faithfulness",
    "import", "import-openi", "import-vqa-rad", "label-reports", "predict", "prepare", "pretrain",
    "ratings-export", "ratings-summary", "retrieval-eval", "search", "segment", "serve", "site-transfer",
    "synth", "train", "transfer", "validate-labeler", "vqa", "zero-shot",
}  # fmt: skip


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return build_parser()


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_help_lists_every_command(parser, capsys):
    assert set(commands(parser)) == COMMANDS  # a new command: add it here (and a test of its own)
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--help"])
    assert done.value.code == 0
    listed = capsys.readouterr().out
    assert all(f"\n    {name} " in listed or f"\n    {name}\n" in listed for name in COMMANDS)


def test_every_command_has_help(parser, capsys):
    for name in sorted(COMMANDS):
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: medmodal {name}"), name


def test_train_and_config_take_a_named_preset(parser, tmp_path, capsys):
    from medmodal.cli.main import resolve_config
    from medmodal.config import load_config
    from medmodal.models.presets import preset_config

    args = parser.parse_args(
        ["train", "--data", "d", "--out", "r", "--preset", "stacked_retrieved", "--epochs", "3"]
    )
    config = resolve_config(args)
    assert config.model == preset_config("stacked_retrieved").model and config.train.epochs == 3
    # `medmodal config --preset` writes the preset out whole: as a --config file it is the same config
    assert main(["config", "--preset", "stacked_retrieved"]) == 0
    (tmp_path / "recipe.yaml").write_text(capsys.readouterr().out)
    assert load_config(tmp_path / "recipe.yaml") == preset_config("stacked_retrieved")
    assert (
        main(
            [
                "train",
                "--data",
                "d",
                "--out",
                "r",
                "--preset",
                "tiny",
                "--config",
                str(tmp_path / "recipe.yaml"),
            ]
        )
        == 2
    )
    assert "--preset and --config are exclusive" in capsys.readouterr().err


# ------------------------------------------------------------------ user errors vs bugs
def test_a_bad_config_field_is_a_short_error_naming_file_and_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  imag_size: 64\n")
    assert main(["config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid configuration in {bad}") and "data.imag_size: unknown key" in err
    assert "Traceback" not in err


def test_a_bad_manifest_row_names_file_row_and_field(tiny_data, tmp_path, capsys):
    import shutil

    import pandas as pd

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    table.loc[2, "boxes"] = '[{"label": "effusion", "box": [1, 2]}]'
    table.to_csv(data / "manifest.csv", index=False)
    assert (
        main(["-q", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--on-bad-row", "error"])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{data / 'manifest.csv'}: row 4 (id {table.loc[2, 'id']}), field 'boxes'" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_manifest_without_a_validation_split_is_a_short_error(tiny_data, tmp_path, capsys):
    import shutil

    import pandas as pd

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    table = pd.read_csv(data / "manifest.csv", dtype=str, keep_default_na=False)
    table.loc[table["split"] == "val", "split"] = "train"
    table.to_csv(data / "manifest.csv", index=False)
    assert main(["-q", "train", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {data / 'manifest.csv'}: no validation studies")


def test_usage_and_run_folder_mistakes_exit_2(tmp_path, capsys):
    assert main(["predict", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "error: give --image, --text, or both\n"
    assert main(["evaluate", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err == f"error: run folder not found: {tmp_path / 'absent'}\n"
    assert main(["label-reports", str(tmp_path / "absent.csv"), str(tmp_path / "out.csv")]) == 2
    assert str(tmp_path / "absent.csv") in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        main(["--debug", "evaluate", str(tmp_path / "absent")])


def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    import medmodal.config

    def bug(path):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(medmodal.config, "load_config", bug)
    with pytest.raises(ValueError, match="a bug, not a user error"):
        main(["config"])


def test_os_errors_count_as_user_errors_only_on_a_path_the_user_typed():
    args = argparse.Namespace(data="some/data/", out="runs/x", beam_size=None, fields=["a.csv"])
    missing = FileNotFoundError(2, "No such file or directory", "some/data")
    assert is_user_error(missing, args)
    assert is_user_error(PermissionError(13, "Permission denied", "a.csv"), args)
    assert not is_user_error(FileNotFoundError(2, "No such file or directory", "/site-packages/x.json"), args)
    assert not is_user_error(FileNotFoundError("no filename attached"), args)
    assert not is_user_error(ValueError("some/data"), args)


def _run_cli(code: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_exit_status_and_stderr_of_a_real_process(tmp_path):
    """What a shell sees: a user error -> status 2 and one line; a bug -> a traceback and status 1."""
    user = _run_cli(
        "from medmodal.cli.main import main; raise SystemExit(main(['evaluate', 'absent']))", tmp_path
    )
    assert (user.returncode, user.stderr) == (2, f"error: run folder not found: {tmp_path / 'absent'}\n")
    bug = _run_cli(
        "import medmodal.config as c\n"
        "def bug(path): raise ValueError('injected bug')\n"
        "c.load_config = bug\n"
        "from medmodal.cli.main import main; raise SystemExit(main(['config']))",
        tmp_path,
    )
    assert bug.returncode == 1
    assert "Traceback (most recent call last)" in bug.stderr and "ValueError: injected bug" in bug.stderr


# ------------------------------------------------------------------ the main path
@pytest.mark.slow
def test_synth_train_evaluate_predict(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["-q", "synth", str(data), "--n", "60", "--image-size", "64", "--no-masks"]) == 0
    assert json.loads((data / "labels.json").read_text())
    config = tmp_path / "tiny.yaml"
    save_config(tiny_config(**{"train.epochs": 1}), config)
    assert main(["-q", "train", "--data", str(data), "--out", str(run), "--config", str(config)]) == 0
    assert "trained" in capsys.readouterr().out
    assert main(["-q", "evaluate", str(run), "--split", "test"]) == 0
    assert "classification" in json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    image = min((data / "images").iterdir())
    out = tmp_path / "prediction.json"
    assert (
        main(
            [
                "-q",
                "predict",
                str(run),
                "--image",
                str(image),
                "--text",
                "Shortness of breath.",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    prediction = json.loads(out.read_text())
    assert prediction and f"prediction written to {out}" in capsys.readouterr().out
