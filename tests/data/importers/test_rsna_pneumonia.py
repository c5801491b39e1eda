"""RSNA pneumonia importer: 300 real rows of stage_2_train_labels.csv from the wheel, 64-px PNG stand-ins."""

from __future__ import annotations

import pytest

from medmodal.data.importers.rsna_pneumonia import import_rsna_pneumonia

from .real_tables import needs_wheel, problem_cells, read_member, write_image, write_source


@needs_wheel
def test_real_rows_boxes_scaled(tmp_path):
    table = read_member("kaggle_stage_2_train_labels.csv.zip")
    positives = table.loc[table["Target"] == "1", "patientId"].drop_duplicates().head(60)
    sample = table[table["patientId"].isin(set(positives) | set(table["patientId"].head(100)))]
    sample.to_csv(tmp_path / "stage_2_train_labels.csv", index=False)
    for patient in sample["patientId"].unique():
        write_image(tmp_path / "stage_2_train_images" / f"{patient}.png", size=64)
    result = import_rsna_pneumonia(tmp_path, tmp_path / "out", check_images=True)
    assert result.problems == [] and result.manifest.problems == []
    studies = {s.id: s for s in result.manifest.studies}
    assert len(studies) == sample["patientId"].nunique()
    for patient, rows in sample.groupby("patientId"):
        assert (studies[patient].labels == ["pneumonia"]) == (rows["Target"].iloc[0] == "1")
        assert len(studies[patient].boxes) == (rows["Target"] == "1").sum()
    row = sample[sample["Target"] == "1"].iloc[0]
    x, y, w, h = (float(row[c]) for c in ("x", "y", "width", "height"))
    box = studies[row["patientId"]].boxes[0].box
    assert box == pytest.approx((x / 16, y / 16, (x + w) / 16, (y + h) / 16), abs=0.01)


def test_bad_rows_named(tmp_path):
    table = (
        "patientId,x,y,width,height,Target\n"
        "a,10,10,100,100,1\nb,,,,,0\n"
        "c,,,,,2\n"  # row 4
        "d,5,5,0,10,1\n"  # row 5
        "a,,,,,0\n"  # row 6: disagrees with row 2
        "e,1,1,1,1,0\n"  # row 7: a box on a negative
    )
    write_source(tmp_path, "stage_2_train_labels.csv", table, "abcde", size=1024)
    result = import_rsna_pneumonia(tmp_path, tmp_path / "out")
    assert problem_cells(result) == {(4, "Target"), (5, "width"), (6, "Target"), (7, "x")}
    assert [s.id for s in result.manifest.studies] == ["b"]  # a, c, d, e have a bad row
