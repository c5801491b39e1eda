"""The format registry and ``medmodal import``: listing, running, option checks, the old command names."""

from __future__ import annotations

import json

import pytest

from medmodal.cli.main import main
from medmodal.data.importers.registry import FORMATS, accepted_keywords, available, get_format, run_import

from .real_tables import write_image


def test_every_format_resolves_to_a_function_with_its_options():
    assert available() == ["openi", "iu-xray", "nih", "chexpert", "mimic-cxr", "vindr-cxr", "rsna-pneumonia",
                           "siim-pneumothorax", "padchest", "folder", "vqa-rad"]  # fmt: skip
    for fmt in FORMATS.values():
        assert {o.keyword for o in fmt.options} <= accepted_keywords(fmt.load()), fmt.name


def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ValueError, match="unknown import format 'dicomdir'; formats: openi, iu-xray"):
        get_format("dicomdir")
    with pytest.raises(ValueError, match="has no option"):
        run_import("nih", tmp_path, tmp_path / "out", uncertain="positive")


def test_command_runs_a_format(tmp_path, capsys):
    (tmp_path / "stage_2_train_labels.csv").write_text(
        "patientId,x,y,width,height,Target\na,0,0,512,512,1\nb,,,,,0\n"
    )
    for name in "ab":
        write_image(tmp_path / "imgs" / f"{name}.png", size=64)
    out = tmp_path / "out"
    assert main(["-q", "import", "rsna-pneumonia", str(tmp_path), str(out), "--images", str(tmp_path / "imgs"),
                 "--copy-images", "--check-images"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_written"] == 2 and summary["images_outside_out"] == 0
    assert summary["manifest"]["label_counts"] == {"pneumonia": 1}
    assert (out / "images" / "a.png").is_file()
    assert json.loads((out / "manifest.csv").read_text().splitlines()[1].split(',"', 1)[1].rsplit('"', 1)[0]
                      .replace('""', '"')) == [{"label": "pneumonia", "box": [0.0, 0.0, 32.0, 32.0]}]  # fmt: skip
    assert main(["-q", "import", "rsna-pneumonia", str(tmp_path / "absent"), str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_strict_stops_with_the_bad_rows(tmp_path, capsys):
    (tmp_path / "train-rle.csv").write_text("ImageId, EncodedPixels\na,-1\nb,1 2 3\n")
    write_image(tmp_path / "a.png")
    assert main(["-q", "import", "siim-pneumothorax", str(tmp_path), str(tmp_path / "out"), "--strict"]) == 2
    assert "row 3 (id b), field 'EncodedPixels'" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()
