"""``medmodal baseline``: fit from the command line, settings by ``--set``, errors as one line."""

import json

import yaml

from medmodal.cli.main import main


def test_baseline_command_fits_with_settings(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "-q",
            "baseline",
            "tfidf_logreg",
            "--data",
            str(tiny_data),
            "--out",
            str(out),
            "--boxes",
            "mean_box",
            "--set",
            "tfidf_logreg.ngram_max=1",
            "--set",
            "tfidf_logreg.c_grid=[0.5]",
            "--no-evaluate",
        ]
    )
    assert code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["baseline"]["classifier"] == "tfidf_logreg"
    assert config["baseline"]["kwargs"] == {"tfidf_logreg": {"ngram_max": 1, "c_grid": [0.5]}}
    fit = json.loads((out / "training_done.json").read_text())["fit"]
    assert fit["classifier"]["C"] == 0.5
    assert (
        "chosen on the validation split" in capsys.readouterr().out
    )  # scoring: tests/models/test_baselines.py


def test_bad_settings_are_one_line_errors(tiny_data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(["baseline", "tfidf_logreg", "--data", str(tiny_data), "--out", out, "--set", "ngram_max=1"])
        == 2
    )
    assert "expected NAME.KEY=VALUE" in capsys.readouterr().err
    assert (
        main(
            [
                "baseline",
                "pixel_logreg",
                "--data",
                str(tiny_data),
                "--out",
                out,
                "--set",
                "pixel_logreg.size=2",
            ]
        )
        == 2
    )
    assert "baseline.kwargs.pixel_logreg: size" in capsys.readouterr().err
    assert main(["baseline", "--data", str(tiny_data), "--out", out, "--report", "template_report"]) == 2
    assert "template_report writes the findings" in capsys.readouterr().err
