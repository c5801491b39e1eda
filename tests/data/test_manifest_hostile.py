"""Hostile manifests: paths leaving the data folder, overlong names, broken quoting, oversized and
mistyped cells, image bombs. Every bad row is named by file / row / field, never crashes the reader,
never leaks report text, and good rows are kept."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGBaseline8Bit

from medmodal.config import Config
from medmodal.data import manifest_rows
from medmodal.data.manifest import ManifestError, read_manifest
from medmodal.data.manifest_contract import MAX_TEXT_CHARS
from medmodal.data.pipeline import read_dataset

from .fixtures import gradient, truncate, write_csv, write_jsonl, write_png
from .hostile_files import gray_dicom, jpeg_bytes, png_claiming, with_jpeg_size

REFUSED_IMAGES = yaml.safe_load((Path(__file__).parent / "hostile_images.yaml").read_text(encoding="utf-8"))
SECRET = "SECRET-REPORT-TEXT"  # in every row's findings: must never appear in a problem message or log


def cells(study_id: str, **values) -> dict:
    base = {"id": study_id, "image": "", "findings": f"{SECRET} of {study_id}.", "labels": "", "boxes": "",
            "split": "", "site": ""}  # fmt: skip
    base.update(values)
    return base


def assert_clean(manifest_or_error, file, caplog) -> None:
    """Each problem names this file and a row, repeats no report text, stays short; no traceback logged."""
    for problem in manifest_or_error.problems:
        text = str(problem)
        assert text.startswith(f"{file}: row {problem.row}")
        assert SECRET not in text and len(text) < 700, text
    for record in caplog.records:
        assert record.exc_info is None and record.levelno < logging.ERROR, record.getMessage()
        assert SECRET not in record.getMessage()


def fields_by_row(manifest_or_error) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for p in manifest_or_error.problems:
        out.setdefault(p.row, set()).add(p.field)
    return out


# ------------------------------------------------------------------------------ fuzz
@pytest.fixture
def hostile_csv(tmp_path):
    """A data folder and a CSV with 37 hostile rows between good ones; returns (folder, expected, good ids)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    write_png(data / "img" / "good.png")
    write_png(outside / "x.png")
    (data / "img" / "folder.png").mkdir()
    (data / "img" / "empty.png").write_bytes(b"")
    truncate(
        write_png(data / "img" / "cut.png", np.random.default_rng(0).integers(0, 255, (99, 99), np.uint8))
    )
    (data / "img" / "text.png").write_text("not an image")
    (data / "img" / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    png_claiming(data / "img" / "huge.png", 100_000, 100_000)
    (data / "img" / "huge.jpg").write_bytes(with_jpeg_size(jpeg_bytes(gradient(64, 64)), 12_000, 12_000))
    frame = with_jpeg_size(jpeg_bytes(gradient(64, 64)), 40_000, 40_000)
    gray_dicom(data / "img" / "bomb.dcm", 64, 64, pixel_data=frame, syntax=JPEGBaseline8Bit)
    shutil.copy(get_testdata_file("JPGExtended.dcm"), data / "img" / "12bit.dcm")
    gray_dicom(data / "img" / "good.dcm", 40, 60, pixel_data=gradient(40, 60).tobytes())
    os.symlink(outside / "x.png", data / "img" / "link-out.png")
    os.symlink("/etc/passwd", data / "img" / "passwd.png")
    os.symlink(data / "img" / "good.png", data / "img" / "link-in.png")
    os.symlink(data / "img" / "loop.png", data / "img" / "loop.png")
    os.symlink(data / "img" / "absent.png", data / "img" / "dangling.png")
    os.mkfifo(data / "img" / "fifo.png")

    box = [{"label": "nodule", "box": [1, 1, 5, 5]}]
    # (cells, expected bad field or None for a good row)
    rows = [
        (cells("good", image="img/good.png"), None),
        (cells("good-dicom", image="img/good.dcm"), None),
        (cells("good-absolute", image=str(data / "img" / "good.png")), None),
        (cells("good-link-in", image="img/link-in.png"), None),
        (cells("good-controls", findings=f"{SECRET}\x0cpage\x1bbreak\x00."), None),
        (cells("good-box", image="img/good.png", labels="nodule", boxes=json.dumps(box)), None),
        *((cells(study_id, image=image), "image") for study_id, image in REFUSED_IMAGES.items()),
        (cells("absolute-out", image=str(outside / "x.png")), "image"),
        (cells("long-name", image="img/" + "a" * 300 + ".png"), "image"),
        (cells("long-path", image="/".join(["d" * 200] * 25)), "image"),
        (cells("nan-box", labels="nodule", boxes='[{"label": "nodule", "box": [NaN, 1, 5, 5]}]'), "boxes"),
        (
            cells("inf-box", labels="nodule", boxes='[{"label": "nodule", "box": [1, 1, Infinity, 5]}]'),
            "boxes",
        ),
        (cells("bool-box", labels="nodule", boxes='[{"label": "nodule", "box": [true, 1, 5, 5]}]'), "boxes"),
        (cells("many-boxes", labels="nodule", boxes=json.dumps(box * 1001)), "boxes"),
        (cells("string-boxes", boxes='"abc"'), "boxes"),
        (cells("box-json", boxes="[{"), "boxes"),
        (cells("deep-json", boxes="[" * 100_000), "boxes"),
        (cells("bell-split", split="train\x07"), "split"),
        (cells("multi\nline-id"), "id"),
        (cells("good"), "id"),  # duplicate
        (cells(""), "id"),
        (cells("x" * 300), "id"),
        (cells("huge-text", findings=SECRET * (MAX_TEXT_CHARS // len(SECRET) + 10)), "findings"),
        (cells("long-site", site="s" * 1000), "site"),
        (cells("control-label", labels="nodule;eff\x1busion"), "labels"),
        (cells("long-label", labels="n" * 300), "labels"),
    ]
    folder_rows = [r for r, _ in rows]
    path = data / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(folder_rows[0]))
        writer.writeheader()
        writer.writerows(folder_rows)
        f.write("too-many,,x,,,,,extra,cells\n")
        f.write(f'unclosed,img/good.png,"{SECRET} opened\nand never closed,,,\nlast,,{SECRET},,,,\n')
    expected = {row: {field} for row, (_, field) in enumerate(rows, start=2) if field}
    n = len(rows)
    expected[n + 2] = {"(line)"}
    expected[n + 3] = {"findings"}
    good = [r["id"] for r, field in rows if field is None]
    return path, expected, good


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_fuzz_csv_every_bad_row_named_good_rows_kept(hostile_csv, caplog, monkeypatch):
    path, expected, good = hostile_csv
    assert sum(len(v) for v in expected.values()) >= 30
    opened = []
    check = manifest_rows.check_image
    monkeypatch.setattr(manifest_rows, "check_image", lambda p, **kw: (opened.append(p), check(p, **kw))[1])
    caplog.set_level(logging.DEBUG)

    manifest = read_manifest(path)

    assert [s.id for s in manifest.studies] == good
    assert fields_by_row(manifest) == expected
    assert_clean(manifest, path, caplog)
    data = path.parent.resolve()
    assert all(p.is_relative_to(data) for p in opened)  # nothing outside was ever handed to a reader
    assert all(s.image is None or s.image.is_relative_to(data) for s in manifest.studies)
    by_id = {s.id: s for s in manifest.studies}
    assert by_id["good-controls"].sections["findings"] == f"{SECRET} page break ."
    assert by_id["good-link-in"].image == data / "img" / "good.png"

    with pytest.raises(ManifestError) as caught:
        read_manifest(path, on_bad_row="error")
    assert fields_by_row(caught.value) == expected
    assert SECRET not in str(caught.value)


def test_fuzz_jsonl_wrong_types_and_broken_lines(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    write_png(tmp_path / "a.png")
    rows = [
        ({"id": "good", "image": "a.png", "findings": SECRET, "labels": ["nodule"]}, None),
        ({"id": 17, "findings": SECRET}, None),  # a number is a fine id
        ({"id": ["a", "list"], "findings": SECRET}, "id"),
        ({"id": {"an": "object"}, "findings": SECRET}, "id"),
        ({"id": None, "findings": SECRET}, "id"),
        ({"id": "nul-path", "image": "a.png\x00../../etc/passwd", "findings": SECRET}, "image"),
        ({"id": "list-image", "image": ["a.png"], "findings": SECRET}, "image"),
        ({"id": "list-findings", "findings": [SECRET]}, "findings"),
        ({"id": "dict-labels", "findings": SECRET, "labels": {"nodule": 1}}, "labels"),
        ({"id": "nested-labels", "findings": SECRET, "labels": [["nodule"]]}, "labels"),
        ({"id": "dict-boxes", "findings": SECRET, "boxes": {"label": "x"}}, "boxes"),
        ({"id": "list-split", "findings": SECRET, "split": ["train"]}, "split"),
        ({"id": "dict-patient", "findings": SECRET, "patient_id": {"name": "x"}}, "patient_id"),
        ({"id": "big-report", "report": SECRET * 10_000}, "report"),
    ]
    path = write_jsonl(tmp_path, [r for r, _ in rows])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": "broken", "findings": "' + SECRET + '"\n')  # invalid JSON
        f.write('["not", "an", "object"]\n')
        f.write('{"id": "deep", "boxes": ' + "[" * 100_000 + "}\n")
    manifest = read_manifest(path)
    expected = {row: {field} for row, (_, field) in enumerate(rows, start=1) if field}
    expected[len(rows) + 1] = expected[len(rows) + 2] = expected[len(rows) + 3] = {"(line)"}
    assert [s.id for s in manifest.studies] == ["good", "17"]
    assert fields_by_row(manifest) == expected
    assert_clean(manifest, path, caplog)


# --------------------------------------------------------------- each fixed case
def test_overlong_path_component_is_a_named_bad_row(tmp_path):
    """Was an uncaught OSError (File name too long) whose message held the path."""
    write_csv(tmp_path, [cells("long", image="a" * 300 + ".png"), cells("ok")])
    manifest = read_manifest(tmp_path)
    assert [s.id for s in manifest.studies] == ["ok"]
    (problem,) = manifest.problems
    assert (problem.row, problem.field) == (2, "image")
    assert problem.message == "a part of the image path is 304 bytes long, more than the limit of 255"


def test_unclosed_quote_names_row_and_column_and_keeps_earlier_rows(tmp_path, caplog):
    """Was a whole-file failure; with the quote in the image column, a crash printing other rows' text."""
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "manifest.csv"
    path.write_text(f"id,image,findings\na,,{SECRET} a\n\nb,,\"{SECRET} b\nstill b\"\n"
                    f"c,\"img/x.png,{SECRET} c\nd,,{SECRET} d\n", encoding="utf-8")  # fmt: skip
    manifest = read_manifest(path)
    assert [(s.id, s.row) for s in manifest.studies] == [("a", 2), ("b", 4)]
    (problem,) = manifest.problems
    assert (problem.row, problem.field) == (5, "image")
    assert "line 6" in problem.message and "line 7" in problem.message and "never closed" in problem.message
    assert_clean(manifest, path, caplog)
    assert manifest.summary()["rows_read"] == 3


def test_quote_swallowing_rows_until_a_later_quote_is_named(tmp_path):
    """An open quote closed by a later row's quote: one row holding line breaks; its fields are refused."""
    path = tmp_path / "manifest.csv"
    path.write_text(f'id,image,findings\na,"x.png,{SECRET}\nb,,"{SECRET}"\nc,,{SECRET}\n', encoding="utf-8")
    manifest = read_manifest(path)
    assert [s.id for s in manifest.studies] == ["c"]
    assert {(p.row, p.field) for p in manifest.problems} in ({(2, "image")}, {(2, "(line)")})
    assert all(SECRET not in str(p) for p in manifest.problems)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_paths_outside_the_data_folder_are_refused_unless_allowed(tmp_path, monkeypatch, how):
    data = tmp_path / "data"
    target = write_png(tmp_path / "outside" / "x.png")
    data.mkdir()
    image = {"dotdot": "../outside/x.png", "absolute": str(target), "symlink": "link.png"}[how]
    if how == "symlink":
        os.symlink(target, data / "link.png")
    write_csv(data, [cells("out", image=image), cells("ok")])
    seen = []
    monkeypatch.setattr(manifest_rows, "check_image", lambda p, **kw: seen.append(p) or (40, 60))

    manifest = read_manifest(data)
    assert [s.id for s in manifest.studies] == ["ok"] and seen == []
    (problem,) = manifest.problems
    assert problem.field == "image" and "leads outside the data folder" in problem.message
    assert "allow_outside_paths" in problem.message

    allowed = read_manifest(data, allow_outside_paths=True)
    assert [s.id for s in allowed.studies] == ["out", "ok"]
    assert allowed.studies[0].image == target.resolve() and seen == [target.resolve()]


def test_config_option_reaches_the_reader(tmp_path):
    data = tmp_path / "data"
    write_png(tmp_path / "outside" / "x.png")
    write_csv(data, [cells("out", image="../outside/x.png"), cells("ok")])
    assert [s.id for s in read_dataset(data, Config()).studies] == ["ok"]
    config = Config.model_validate({"data": {"allow_outside_paths": True}})
    assert [s.id for s in read_dataset(data, config).studies] == ["out", "ok"]


def test_randomly_mutated_manifests_never_crash(tmp_path):
    """300 seeded byte-level mutations (quotes, separators, NUL, BOM, escapes) of a small CSV / JSONL:
    each reads or fails with a ManifestError; every problem names the file and a row."""
    import random

    write_png(tmp_path / "a.png")
    base = ('id,image,findings,labels,boxes,split,site,view\n'
            'x1,a.png,"ok text",nodule,"[{""label"": ""nodule"", ""box"": [1,2,3,4]}]",train,s,PA\n'
            'x2,,"more, text",,,,,\n')  # fmt: skip
    pieces = [
        '"',
        ",",
        "\n",
        "\r",
        "\x00",
        "\\",
        "[",
        "]",
        "{",
        "}",
        "/",
        "..",
        "\x1b",
        ";",
        "\ufeff",
        "\xff",
    ]
    rng = random.Random(0)
    outcomes = {"read": 0, "refused": 0}
    for case in range(150):
        text = list(base)
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(text))
            if rng.random() < 0.5:
                text.insert(i, rng.choice(pieces))
            else:
                del text[i]
        for name, content in (("manifest.csv", "".join(text)), ("m.jsonl", "".join(text).replace(",", ":"))):
            path = tmp_path / f"{case}-{name}"
            path.write_text(content, encoding="utf-8")
            try:
                manifest = read_manifest(path)
                outcomes["read"] += 1
            except ManifestError as err:
                manifest = err
                outcomes["refused"] += 1
            assert all(str(p).startswith(f"{path}: row {p.row}") for p in manifest.problems)
    assert outcomes["read"] > 50 and outcomes["refused"] > 10  # both paths exercised
