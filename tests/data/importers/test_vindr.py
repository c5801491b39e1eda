"""VinDr-CXR / VinBigData importer: 40 real images' rows (3 readers each) from vinbigdata-train.csv in the wheel."""

from __future__ import annotations

import json

import pytest

from medmodal.data.importers.common import label_name
from medmodal.data.importers.vindr import import_vindr

from .real_tables import needs_wheel, problem_cells, read_member, write_image, write_source

IMAGES = 40


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    table = read_member("vinbigdata-train.csv.gz")
    boxed = table.loc[table["x_min"] != "", "image_id"].drop_duplicates().head(IMAGES // 2)
    plain = table.loc[~table["image_id"].isin(set(table.loc[table["x_min"] != "", "image_id"])), "image_id"]
    chosen = set(boxed) | set(plain.drop_duplicates().head(IMAGES // 2))
    sample = table[table["image_id"].isin(chosen)]
    src = tmp_path_factory.mktemp("vindr")
    sample.to_csv(src / "train.csv", index=False)
    for image_id in chosen:
        write_image(
            src / "train" / f"{image_id}.png", size=16
        )  # stand-ins: boxes are in DICOM pixels, not checked
    return src, sample


@needs_wheel
def test_readers_merged_and_kept(release, tmp_path):
    src, sample = release
    result = import_vindr(src, tmp_path / "any")
    assert result.problems == [] and result.rows_written == IMAGES
    assert result.manifest.problems == []
    studies = {s.id: s for s in result.manifest.studies}
    for image_id, rows in sample.groupby("image_id"):
        study = studies[image_id]
        findings = {label_name(c) for c in rows["class_name"]} - {"no_finding"}
        assert study.labels == sorted(findings)
        assert study.extra["readers"].split(";") == sorted(set(rows["rad_id"]))
        assert len(study.boxes) == (rows["x_min"] != "").sum()
        per_reader = json.loads(study.extra["reader_labels"])
        assert set(per_reader) == set(rows["rad_id"])
    stored = json.loads(next(s for s in (tmp_path / "any" / "manifest.csv").read_text().splitlines() if '"reader"' in s)
                        .split(',"[', 1)[1].rsplit(']"', 1)[0].replace('""', '"').join("[]"))  # fmt: skip
    assert all(set(b) == {"label", "box", "reader"} for b in stored)


@needs_wheel
def test_reader_agreement(release, tmp_path):
    src, sample = release
    two = {s.id: s for s in import_vindr(src, tmp_path / "two", min_readers=2).manifest.studies}
    for image_id, rows in sample.groupby("image_id"):
        votes = rows[rows["class_name"] != "No finding"].groupby("class_name")["rad_id"].nunique()
        assert two[image_id].labels == sorted(label_name(c) for c, n in votes.items() if n >= 2)
        assert all(b.label in two[image_id].labels for b in two[image_id].boxes)


def test_bad_rows_named(tmp_path):
    table = (
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,Nodule/Mass,8,R1,10,10,20,20\n"
        "a,No finding,14,R2,,,,\n"
        "a,Aortic enlargement,0,R3,50,50,40,60\n"  # row 4: x_max <= x_min
        "b,Cardiomegaly,3,,1,1,5,5\n"  # row 5: no reader
        "b,No finding,14,R1,1,1,2,2\n"  # row 6: a box on No finding
        "b,Cardiomegaly,3,R2,1,x,5,5\n"  # row 7: not a number
    )
    result = import_vindr(write_source(tmp_path, "train.csv", table, "ab"), tmp_path / "out")
    assert problem_cells(result) == {(4, "x_max"), (5, "rad_id"), (6, "x_min"), (7, "y_min")}
    studies = {s.id: s for s in result.manifest.studies}
    assert studies["a"].labels == ["nodule_mass"] and studies["a"].extra["readers"] == "R1;R2"
    with pytest.raises(ValueError, match="min_readers"):
        import_vindr(tmp_path, tmp_path / "o2", min_readers=0)


def test_boxes_scaled_when_the_table_gives_the_original_size(tmp_path):
    (tmp_path / "train.csv").write_text("image_id,class_name,rad_id,x_min,y_min,x_max,y_max,width,height\n"
                                        "a,Nodule/Mass,R1,100,200,300,400,2000,1000\n")  # fmt: skip
    write_image(tmp_path / "a.png", size=500)
    study = import_vindr(tmp_path, tmp_path / "out", check_images=True).manifest.studies[0]
    assert study.boxes[0].box == (25.0, 100.0, 75.0, 200.0)  # x by 500/2000, y by 500/1000
