"""NIH ChestX-ray14 importer: the real Data_Entry / BBox_List tables from the wheel, tiny PNGs named as the release names them."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from medmodal.data.importers.nih import NIH_FINDINGS, import_nih, read_boxes, read_entries
from medmodal.data.importers.tables import ImportFormatError

from .real_tables import REAL_IMAGES, needs_real_images, needs_wheel, read_member, write_image

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"


@pytest.fixture(scope="module")
def real_tables():
    return read_member("Data_Entry_2017_v2020.csv.gz"), read_member("BBox_List_2017.csv.gz")


@pytest.fixture(scope="module")
def release(real_tables, tmp_path_factory):
    """Data_Entry rows of every boxed image + the first 300 rows; the full box list; 64-px PNGs for 60 images."""
    entries, boxes = real_tables
    folder = tmp_path_factory.mktemp("nih")
    boxed = set(boxes["Image Index"])
    sample = pd.concat([entries.head(300), entries[entries["Image Index"].isin(boxed)]]).drop_duplicates(
        "Image Index"
    )
    with gzip.open(folder / "Data_Entry_2017_v2020.csv.gz", "wt") as out:
        sample.to_csv(out, index=False)
    (folder / "BBox_List_2017.csv").write_text(read_member_text("BBox_List_2017.csv.gz"))
    with_images = list(sample["Image Index"].head(20)) + list(boxes["Image Index"].drop_duplicates().head(40))
    for i, name in enumerate(with_images):
        write_image(folder / f"images_{1 + i % 2:03d}" / "images" / name)
    return folder, sample, with_images


def read_member_text(name: str) -> str:
    from .real_tables import wheel_member

    return gzip.decompress(wheel_member(name)).decode()


@needs_wheel
def test_real_boxes_all_match_their_images(release, real_tables, tmp_path):
    folder, sample, _ = release
    problems = []
    entries = read_entries(folder / "Data_Entry_2017_v2020.csv.gz", problems)
    boxes = read_boxes(folder / "BBox_List_2017.csv", entries, problems)
    assert problems == [] and len(entries) == len(sample)
    assert sum(len(b) for b in boxes.values()) == 984 and len(boxes) == 880  # the release's counts
    labels = {b["label"] for bs in boxes.values() for b in bs}
    assert labels == {
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
    }


@needs_wheel
def test_import_scales_boxes_to_the_stored_image(release, real_tables, tmp_path):
    folder, sample, with_images = release
    result = import_nih(folder, tmp_path / "out", check_images=True)
    assert result.rows_written == len(with_images) == 60
    assert result.without_image == len(sample) - 60 and result.problems == []
    assert result.manifest.problems == []  # every scaled box lies inside its 64-px image
    raw = real_tables[1]
    first = raw.iloc[0]  # 00013118_008.png, Atelectasis, x 225.08, y 547.02, w 86.78, h 79.19 (1024-px grid)
    study = next(s for s in result.manifest.studies if s.id == first["Image Index"].removesuffix(".png"))
    box = next(b for b in study.boxes if b.label == "atelectasis")
    x, y, w, h = (float(first[c]) for c in raw.columns[2:6])
    assert box.box == pytest.approx((x / 16, y / 16, (x + w) / 16, (y + h) / 16), abs=0.01)
    entry = sample.set_index("Image Index").loc[first["Image Index"]]
    assert study.patient_id == entry["Patient ID"] and study.view == entry["View Position"]


@needs_wheel
def test_labels_equal_the_raw_finding_labels(release, tmp_path):
    folder, sample, _ = release
    result = import_nih(folder, tmp_path / "out", any_finding="abnormal")
    raw = sample.set_index("Image Index")["Finding Labels"]
    for study in result.manifest.studies:
        names = raw[f"{study.id}.png"].split("|")
        expected = sorted(n.lower() for n in names if n != "No Finding")
        assert sorted(lb for lb in study.labels if lb != "abnormal") == expected
        assert ("abnormal" in study.labels) == bool(expected)


def _tiny_release(tmp_path, rows: str, boxes: str = "") -> tuple:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "Data_Entry_2017.csv").write_text(HEADER + rows)
    if boxes:
        (tmp_path / "src" / "BBox_List_2017.csv").write_text(
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n" + boxes
        )
    return tmp_path / "src"


def test_bad_rows_are_named_by_file_row_and_field(tmp_path):
    src = _tiny_release(
        tmp_path,
        "a.png,Effusion,0,1,50,M,PA\n"
        "b.png,Effusion|Dragon,0,2,50,M,PA\n"  # row 3: unknown finding
        "a.png,No Finding,1,1,51,M,PA\n"  # row 4: duplicate
        ",Mass,0,3,50,F,AP\n"  # row 5: empty image index
        "c.png,No Finding,0,3,50,F,AP\n",
        "a.png,Effusion,10,10,20,x\n"  # row 2: h not a number
        "a.png,Mass,10,10,20,20\n"  # row 3: Mass not among a.png's findings
        "c.png,Infiltrate,1,1,0,5\n",  # row 4: zero width
    )
    for name in ("a.png", "b.png", "c.png"):
        write_image(src / "images" / name, size=1024)
    result = import_nih(src, tmp_path / "out")
    found = {(p.file.rsplit("/", 1)[-1], p.row, p.field) for p in result.problems}
    assert found == {
        ("Data_Entry_2017.csv", 3, "Finding Labels"), ("Data_Entry_2017.csv", 4, "Image Index"),
        ("Data_Entry_2017.csv", 5, "Image Index"), ("BBox_List_2017.csv", 2, "Bbox h"),
        ("BBox_List_2017.csv", 3, "Finding Label"), ("BBox_List_2017.csv", 4, "Bbox [x,y,w,h]"),
    }  # fmt: skip
    assert "unknown finding(s) ['Dragon']" in str(
        next(p for p in result.problems if p.row == 3 and "Data_Entry" in p.file)
    )
    assert sorted(s.id for s in result.manifest.studies) == ["a", "c"]
    assert result.summary()["bad_source_rows"] == 6
    with pytest.raises(
        ImportFormatError, match=r"Data_Entry_2017.csv: row 3 \(id b.png\), field 'Finding Labels'"
    ):
        import_nih(src, tmp_path / "strict", strict=True)


def test_official_split_lists_and_folder_splits(tmp_path):
    rows = "".join(f"{p}_{i}.png,No Finding,{i},{p},40,F,PA\n" for p in range(1, 21) for i in range(2))
    src = _tiny_release(tmp_path, rows)
    names = [f"{p}_{i}.png" for p in range(1, 21) for i in range(2)]
    for n, name in enumerate(names):
        write_image(src / ("test" if n < 8 else "train") / name, size=32)
    (src / "test_list.txt").write_text("\n".join(names[:8]))
    (src / "train_val_list.txt").write_text("\n".join(names[8:]))
    official = import_nih(src, tmp_path / "o", val_fraction=0.25, seed=1).manifest
    assert {s.id for s in official.split("test")} == {n[:-4] for n in names[:8]}
    val_patients = {s.patient_id for s in official.split("val")}
    assert len(val_patients) == 4 and not val_patients & {s.patient_id for s in official.split("train")}
    folders = import_nih(src, tmp_path / "f", splits="folders").manifest
    assert len(folders.split("test")) == 8 and len(folders.split("train")) == 32
    copied = import_nih(src, tmp_path / "c", splits="none", copy_images=True)
    assert copied.summary()["images_outside_out"] == 0
    assert all(s.image.is_relative_to((tmp_path / "c" / "images").resolve()) for s in copied.manifest.studies)


def test_any_finding_must_not_shadow_a_finding(tmp_path):
    src = _tiny_release(tmp_path, "a.png,Mass,0,1,50,M,PA\n")
    write_image(src / "a.png")
    with pytest.raises(ValueError, match="one of the NIH findings"):
        import_nih(src, tmp_path / "out", any_finding="Mass")
    assert len(NIH_FINDINGS) == 14


@pytest.mark.slow
@needs_wheel
@needs_real_images
def test_the_real_64px_radiographs(tmp_path):
    """The 1,000 NIH images of the shared folder against the full 112,120-row table."""
    src = tmp_path / "src"
    src.mkdir()
    from .real_tables import write_member

    write_member("Data_Entry_2017_v2020.csv.gz", src / "Data_Entry_2017_v2020.csv.gz")
    write_member("BBox_List_2017.csv.gz", src / "BBox_List_2017.csv.gz")
    result = import_nih(src, tmp_path / "out", images=REAL_IMAGES / "nih1000-64px" / "NIH1000", splits="folders",
                        check_images=True)  # fmt: skip
    summary = result.summary()
    assert summary["source_rows"] == 112120 and summary["bad_source_rows"] == 0
    assert summary["rows_written"] == 1000 and summary["left_out_without_image"] == 111120
    assert summary["manifest"]["split_counts"] == {"train": 600, "val": 200, "test": 200}
    assert summary["manifest"]["rows_skipped"] == 0 and summary["manifest"]["with_boxes"] == 9
    labels = pd.read_csv(REAL_IMAGES / "nih1000-64px" / "labels.csv", dtype=str)
    normal = set(labels.loc[labels["Finding Labels"] == "No Finding", "image_index"].str[:-4])
    assert {s.id for s in result.manifest.studies if not s.labels} == normal
    json.dumps(summary, default=str)


def test_manifest_written_into_the_release_folder_needs_no_outside_paths(tmp_path):
    src = _tiny_release(tmp_path, "a.png,Mass,0,1,50,M,PA\nb.png,No Finding,0,2,50,F,PA\n")
    for name in ("a.png", "b.png"):
        write_image(src / "images_001" / "images" / name)
    result = import_nih(src, src)
    assert result.summary()["images_outside_out"] == 0
    from medmodal.data.manifest import read_manifest

    assert len(read_manifest(src, on_bad_row="error")) == 2  # the reader's default refuses outside paths
