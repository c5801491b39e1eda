"""PadChest importer: 300 real rows of the PadChest table from the wheel (labels, Spanish report text)."""

from __future__ import annotations

import ast

import pytest

from medmodal.data.importers.common import label_name
from medmodal.data.importers.padchest import import_padchest, parse_label_list

from .real_tables import needs_wheel, problem_cells, read_member, write_image


@needs_wheel
def test_real_rows(tmp_path):
    table = read_member("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", nrows=300)
    table.to_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index=False)
    for _, rec in table.head(20).iterrows():
        write_image(tmp_path / rec["ImageDir"] / rec["ImageID"], size=16)
    result = import_padchest(tmp_path, tmp_path / "out")
    assert result.problems == [] and result.rows_written == 300 and result.rows_with_image == 20
    studies = {s.id: s for s in result.manifest.studies}
    for _, rec in table.iterrows():
        study = studies[rec["ImageID"].removesuffix(".png")]
        expected = sorted(
            {label_name(v) for v in ast.literal_eval(rec["Labels"]) if v.strip() and v.strip() != "normal"}
        )
        assert study.labels == expected
        assert study.sections["findings"] == " ".join(rec["Report"].split())  # Spanish text, unchanged
        assert study.patient_id == rec["PatientID"] and study.extra["report_language"] == "es"
    assert any("derram" in s.sections["findings"] for s in studies.values())  # "derrame pleural", stemmed


def test_label_cells_are_literals_only(tmp_path):
    assert parse_label_list("['normal', ' cardiomegaly ', '']") == ["normal", "cardiomegaly"]
    for bad in (
        "__import__('os').system('true')",
        "['a', 1]",
        "{'a': 1}",
        "[" * 200 + "]" * 200,
        "x" * 200_000,
    ):
        with pytest.raises(ValueError):
            parse_label_list(bad)
    (tmp_path / "padchest.csv").write_text("ImageID,ImageDir,PatientID,Labels,Report\n"
                                           "a.png,0,p1,['pleural effusion'],derrame\n"
                                           "b.png,0,p2,\"__import__('os')\",x\n"
                                           "a.png,0,p3,[],y\n")  # fmt: skip
    result = import_padchest(tmp_path / "padchest.csv", tmp_path / "out")
    assert problem_cells(result) == {(3, "Labels"), (4, "ImageID")}
    assert result.manifest.studies[0].labels == ["pleural_effusion"]
