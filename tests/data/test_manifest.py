"""The dataset contract: reading, validating and splitting manifests."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from medmodal.data.manifest import Manifest, ManifestError, find_manifest_file, read_manifest
from medmodal.data.splits import patients_in_several_splits
from medmodal.data.types import Box

from .fixtures import row, truncate, write_csv, write_jsonl, write_png

NODULE_BOX = [{"label": "nodule", "box": [5, 6, 20, 30]}]


def problems_by_row(manifest_or_error) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for p in manifest_or_error.problems:
        out.setdefault(p.row, set()).add(p.field)
    return out


# ---------------------------------------------------------------- a good manifest
def test_reads_every_contract_column(tmp_path):
    write_png(tmp_path / "img" / "a.png")
    write_csv(
        tmp_path,
        [
            row("a", patient_id="p1", image="img/a.png", indication="Cough.", labels="nodule; effusion",
                boxes=NODULE_BOX, split="Train", site="north", age="71"),
            row("b", patient_id="p2", labels="", split="test"),
        ],
    )  # fmt: skip
    manifest = read_manifest(tmp_path)

    assert isinstance(manifest, Manifest)
    assert manifest.path == tmp_path / "manifest.csv"
    a, b = manifest.studies
    assert a.id == "a" and a.row == 2 and b.row == 3  # header is row 1
    assert a.image == (tmp_path / "img" / "a.png").resolve() and a.image.is_absolute()
    assert a.sections == {
        "indication": "Cough.",
        "findings": "Findings of a. No effusion.",
        "impression": "Normal.",
    }
    assert a.labels == ["nodule", "effusion"]
    assert a.boxes == [Box("nodule", (5.0, 6.0, 20.0, 30.0))]
    assert (a.split, a.site, a.patient_id, a.extra) == ("train", "north", "p1", {"age": "71"})
    assert b.image is None and b.labels == [] and b.site is None
    assert manifest.label_names == ["effusion", "nodule"]
    assert manifest.problems == []
    assert manifest.split("train") == [a] and manifest.split("test") == [b]
    with pytest.raises(ValueError, match="unknown split"):
        manifest.split("validation")


def test_summary_counts(tmp_path):
    write_png(tmp_path / "a.png")
    write_csv(
        tmp_path,
        [
            row("a", image="a.png", findings="", impression="", labels="nodule", boxes=NODULE_BOX, site="x"),
            row("b", labels="nodule;effusion", site="x"),
            row("c", labels="", split="val"),
            row("", labels="nodule"),  # bad: no id
        ],
    )
    summary = read_manifest(tmp_path, split_fractions=(1.0, 0.0, 0.0)).summary()
    assert summary["rows_read"] == 4
    assert summary["rows_kept"] == 3
    assert summary["rows_skipped"] == 1
    assert summary["problems_by_field"] == {"id": 1}
    assert summary["missing_image"] == 2
    assert summary["missing_text"] == 1  # "a": image only
    assert summary["with_boxes"] == 1
    assert summary["label_counts"] == {"effusion": 1, "nodule": 2}
    assert summary["split_counts"] == {"train": 2, "val": 1, "test": 0}
    assert summary["splits_assigned"] == 2
    assert summary["sites"] == {"x": 2, "": 1}
    json.dumps(summary)  # serialisable


def test_path_may_be_folder_or_file_and_column_names_are_forgiving(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("\ufeffID, Findings ,Labels\ns1,Clear lungs.,\n", encoding="utf-8")  # Excel BOM
    manifest = read_manifest(path)
    assert manifest.studies[0].id == "s1"
    assert manifest.studies[0].sections["findings"] == "Clear lungs."
    assert find_manifest_file(tmp_path) == path


def test_folder_problems_are_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="no manifest in this folder"):
        read_manifest(tmp_path)
    write_csv(tmp_path, [row("a")])
    write_jsonl(tmp_path, [row("a")])
    with pytest.raises(ManifestError, match="several manifests"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("m.csv", "study,findings\na,clear\n", "no 'id' column"),
        ("m.txt", "id\na\n", "unsupported manifest type"),
    ],
)
def test_file_problems_are_manifest_errors(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / name)


def test_csv_line_with_too_many_cells_is_a_bad_row(tmp_path):
    (tmp_path / "manifest.csv").write_text("id,findings\na,clear\nb,clear,extra\nc,clear\n")
    manifest = read_manifest(tmp_path)
    assert [s.id for s in manifest.studies] == ["a", "c"] and [s.row for s in manifest.studies] == [2, 4]
    assert [str(p) for p in manifest.problems] == [
        f"{tmp_path / 'manifest.csv'}: row 3, field '(line)': 3 cells, but the header has 2 columns"
    ]
    with pytest.raises(ManifestError, match=r"manifest\.csv: row 3, field '\(line\)'"):
        read_manifest(tmp_path, on_bad_row="error")


# ----------------------------------------------------------------------- bad rows
@pytest.fixture()
def bad_rows_folder(tmp_path):
    write_png(tmp_path / "ok.png")
    write_png(tmp_path / "small.png")  # 60 x 40 pixels
    truncate(write_png(tmp_path / "truncated.png"))
    (tmp_path / "random.png").write_bytes(b"\x89PNG not really" + bytes(range(200)))
    rows = [
        row("good", image="ok.png", labels="nodule", boxes=NODULE_BOX),  # row 2
        row("", findings="no id"),  # row 3
        row("good", findings="again"),  # row 4: duplicate id
        row("missing-file", image="nowhere/x.png"),  # row 5
        row("truncated", image="truncated.png"),  # row 6
        row("random", image="random.png"),  # row 7
        row("bad-json", labels="nodule", boxes='[{"label": "nodule", "box": [1, 2, 3'),  # row 8
        row("three-numbers", labels="nodule", boxes=[{"label": "nodule", "box": [1, 2, 3]}]),  # row 9
        row("x1-before-x0", labels="nodule", boxes=[{"label": "nodule", "box": [10, 2, 5, 8]}]),  # row 10
        row("negative", labels="nodule", boxes=[{"label": "nodule", "box": [-1, 2, 5, 8]}]),  # row 11
        row("box-label", labels="effusion", boxes=NODULE_BOX),  # row 12
        row("bad-split", split="training"),  # row 13
        row("nothing", findings="", impression=""),  # row 14: neither image nor text
        row(
            "too-big",
            image="small.png",
            labels="nodule",
            boxes=[{"label": "nodule", "box": [10, 10, 70, 20]}],
        ),  # row 15
        row("not-a-list", boxes='{"label": "nodule"}'),  # row 16
        row("good-2", indication="Fever."),  # row 17
    ]
    write_csv(tmp_path, rows)
    return tmp_path


EXPECTED_BAD = {
    3: {"id"}, 4: {"id"}, 5: {"image"}, 6: {"image"}, 7: {"image"}, 8: {"boxes"}, 9: {"boxes"},
    10: {"boxes"}, 11: {"boxes"}, 12: {"boxes"}, 13: {"split"}, 14: {"image"}, 15: {"boxes"}, 16: {"boxes"},
}  # fmt: skip


def test_skip_policy_drops_every_kind_of_bad_row(bad_rows_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="medmodal.data.manifest"):
        manifest = read_manifest(bad_rows_folder, on_bad_row="skip")
    assert [s.id for s in manifest.studies] == ["good", "good-2"]
    assert problems_by_row(manifest) == EXPECTED_BAD
    summary = manifest.summary()
    assert summary["rows_read"] == 16 and summary["rows_skipped"] == 14
    assert summary["problems_by_field"] == {"id": 2, "image": 4, "boxes": 7, "split": 1}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 14 of 16 rows" in warnings[0].getMessage()
    assert "boxes: 7" in warnings[0].getMessage()


def test_problem_messages_name_file_row_field_and_cause(bad_rows_folder):
    manifest = read_manifest(bad_rows_folder)
    text = {p.row: str(p) for p in manifest.problems}
    file = str(bad_rows_folder / "manifest.csv")
    assert all(t.startswith(f"{file}: row ") for t in text.values())
    assert "missing id" in text[3]
    assert "row 4 (id good), field 'id'" in text[4] and "first at row 2" in text[4]
    assert "image file not found: 'nowhere/x.png'" in text[5]
    assert "truncated" in text[6].lower()
    assert "not a recognised image format" in text[7]
    assert "not valid JSON" in text[8]
    assert "4 finite numbers" in text[9]
    assert "x1 > x0" in text[10]
    assert "negative" in text[11]
    assert "label 'nodule' is not among the row's labels ['effusion']" in text[12]
    assert "unknown split 'training'" in text[13]
    assert "neither an image nor any report text" in text[14]
    assert "beyond the image (60 x 40 pixels)" in text[15]
    assert "must be a JSON list" in text[16]


def test_error_policy_lists_all_problems_before_anything_else(bad_rows_folder):
    with pytest.raises(ManifestError) as caught:
        read_manifest(bad_rows_folder, on_bad_row="error")
    err = caught.value
    assert problems_by_row(err) == EXPECTED_BAD
    message = str(err)
    assert message.startswith(f"{bad_rows_folder / 'manifest.csv'}: 14 bad row(s)")
    assert "row 13 (id bad-split), field 'split'" in message
    assert "row 5 (id missing-file), field 'image'" in message


def test_error_message_is_capped_but_problems_are_complete(tmp_path):
    write_csv(tmp_path, [row("")] * 70 + [row("ok")])
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path, on_bad_row="error")
    assert len(caught.value.problems) == 70
    assert "... and 20 more problems" in str(caught.value)


def test_no_usable_row_is_an_error_even_when_skipping(tmp_path):
    write_csv(tmp_path, [row(""), row("")])
    with pytest.raises(ManifestError, match="none usable"):
        read_manifest(tmp_path)


def test_without_image_check_only_existence_is_checked(bad_rows_folder):
    manifest = read_manifest(bad_rows_folder, check_images=False)
    fields = problems_by_row(manifest)
    assert 5 in fields  # file missing: always a problem
    assert 6 not in fields and 7 not in fields and 15 not in fields  # decoding and size not checked
    assert {"truncated", "random", "too-big"} <= {s.id for s in manifest.studies}


def test_row_numbers_match_the_spreadsheet_with_multiline_cells_and_blank_lines(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        'id,findings,split\na,"line one\nline two",\n\nb,clear,\nc,clear,bogus\n', encoding="utf-8"
    )
    manifest = read_manifest(tmp_path)
    assert manifest.studies[0].sections["findings"] == "line one line two"
    assert [p.row for p in manifest.problems] == [5]  # header 1, a 2, blank 3, b 4, c 5
    assert [s.row for s in manifest.studies] == [2, 4]


# -------------------------------------------------------------- labels and reports
def test_configured_labels_ignore_others_and_count_them(tmp_path):
    write_png(tmp_path / "a.png")
    write_csv(
        tmp_path,
        [
            row("a", image="a.png", labels="nodule;tortuous aorta", boxes=NODULE_BOX),
            row("b", labels="tortuous aorta;hernia"),
        ],
    )
    manifest = read_manifest(tmp_path, labels=["effusion", "hernia"])
    assert manifest.problems == []
    assert manifest.label_names == ["effusion", "hernia"]
    a, b = manifest.studies
    assert a.labels == [] and a.boxes == []  # nodule (and its box) outside the set
    assert b.labels == ["hernia"]
    summary = manifest.summary()
    assert summary["labels_outside_set"] == {"nodule": 1, "tortuous aorta": 2}
    assert summary["label_counts"] == {"effusion": 0, "hernia": 1}


def test_report_column_is_split_into_sections(tmp_path):
    write_csv(
        tmp_path,
        [
            {
                "id": "a",
                "report": "CLINICAL HISTORY: Fever.\nFINDINGS: Right lower lobe opacity.\n"
                "IMPRESSION: Pneumonia.",
            },
            {"id": "b", "report": "No acute disease."},
            {"id": "c", "report": ""},
        ],
    )
    manifest = read_manifest(tmp_path)
    a, b = manifest.studies
    assert a.sections == {
        "indication": "Fever.",
        "findings": "Right lower lobe opacity.",
        "impression": "Pneumonia.",
    }
    assert b.sections == {"indication": "", "findings": "No acute disease.", "impression": ""}
    assert [p.field for p in manifest.problems] == ["image"]  # c: nothing at all


# ------------------------------------------------------------------ other formats
def test_jsonl_with_native_lists_and_line_numbers(tmp_path):
    write_png(tmp_path / "a.png")
    lines = [
        json.dumps(
            {"id": "a", "image": "a.png", "findings": "Nodule.", "labels": ["nodule"], "boxes": NODULE_BOX}
        ),
        "",
        "{not json",
        json.dumps({"id": 7, "findings": "Clear.", "labels": "", "split": "bogus"}),
        json.dumps(["not", "an", "object"]),
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    manifest = read_manifest(tmp_path)
    assert [s.id for s in manifest.studies] == ["a"]
    assert manifest.studies[0].boxes == [Box("nodule", (5.0, 6.0, 20.0, 30.0))]
    assert [(p.row, p.field) for p in manifest.problems] == [(3, "(line)"), (4, "split"), (5, "(line)")]
    assert manifest.problems[1].study_id == "7"  # numeric id read as text
    assert manifest.summary()["rows_read"] == 4


def test_parquet_rows_are_numbered_from_one(tmp_path):
    write_png(tmp_path / "a.png")
    frame = pd.DataFrame(
        {
            "id": ["a", "b", None],
            "image": ["a.png", None, None],
            "findings": ["Nodule.", "Clear.", "Clear."],
            "labels": ["nodule", None, None],
            "boxes": [json.dumps(NODULE_BOX), None, None],
            "patient_id": [1, 2, 3],
        }
    )
    frame.to_parquet(tmp_path / "manifest.parquet")
    manifest = read_manifest(tmp_path)
    assert [s.id for s in manifest.studies] == ["a", "b"]
    assert [s.patient_id for s in manifest.studies] == ["1", "2"]
    assert manifest.studies[0].boxes[0].label == "nodule"
    assert [(p.row, p.field) for p in manifest.problems] == [(3, "id")]


# ------------------------------------------------------------------------ splits
def test_given_splits_are_kept_and_the_rest_split_by_patient(tmp_path):
    rows = [row(f"s{i}", patient_id=f"p{i // 4}") for i in range(200)]
    rows[0]["split"] = "test"  # patient p0 is placed by this row
    write_csv(tmp_path, rows)
    manifest = read_manifest(tmp_path, split_seed=3)
    by_id = {s.id: s for s in manifest.studies}
    assert {by_id[f"s{i}"].split for i in range(4)} == {"test"}
    assert patients_in_several_splits(manifest.studies) == {}
    counts = manifest.summary()["split_counts"]
    assert counts["train"] == pytest.approx(140, abs=8) and counts["val"] == pytest.approx(20, abs=8)
    again = read_manifest(tmp_path, split_seed=3)
    assert [s.split for s in again.studies] == [s.split for s in manifest.studies]
    other = read_manifest(tmp_path, split_seed=4)
    assert [s.split for s in other.studies] != [s.split for s in manifest.studies]
