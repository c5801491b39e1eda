"""IU X-ray importer for the report-generation layout (annotation.json + images/<id>/0.png)."""

from __future__ import annotations

import json

import pytest

from medmodal.data.importers.iu_xray import import_iu_xray
from medmodal.data.importers.openi import find_openi_reports
from medmodal.data.importers.tables import ImportFormatError

from .real_tables import write_image

REPORTS = find_openi_reports()


def _record(study, report="The heart is normal.", paths=None, split="train"):
    return {
        "id": study,
        "report": report,
        "image_path": paths or [f"{study}/0.png", f"{study}/1.png"],
        "split": split,
    }


@pytest.fixture()
def release(tmp_path):
    annotation = {
        "train": [_record("CXR1_1_IM-0001"), _record("CXR2_IM-0652", "Borderline cardiomegaly.  No effusion."),
                  "not a record", _record("CXR1_1_IM-0001")],
        "val": [_record("CXR3_IM-1384", split="val", paths=["../../etc/0.png", "CXR3_IM-1384/1.png"])],
        "test": [_record("CXR4_IM-2050", split="test"), _record("CXR5_IM-2117", report=7, split="test")],
    }  # fmt: skip
    (tmp_path / "annotation.json").write_text(json.dumps(annotation))
    for study in ("CXR1_1_IM-0001", "CXR2_IM-0652", "CXR4_IM-2050"):
        write_image(tmp_path / "images" / study / "0.png", size=16)
    write_image(tmp_path / "images" / "CXR3_IM-1384" / "1.png", size=16)
    return tmp_path


def test_splits_kept_and_bad_records_named(release, tmp_path):
    result = import_iu_xray(release, tmp_path / "out")
    studies = {s.id: s for s in result.manifest.studies}
    assert {k: s.split for k, s in studies.items()} == {"CXR1_1_IM-0001": "train", "CXR2_IM-0652": "train",
                                                        "CXR3_IM-1384": "val", "CXR4_IM-2050": "test"}  # fmt: skip
    assert studies["CXR2_IM-0652"].sections["findings"] == "Borderline cardiomegaly. No effusion."
    assert studies["CXR2_IM-0652"].patient_id == "CXR2"
    assert studies["CXR3_IM-1384"].image.name == "1.png"  # the '..' path is not followed
    assert {p.field for p in result.problems} == {"train[3].<record>", "train[4].id", "test[2].report"}


@pytest.mark.slow  # parses the 3,955 report XMLs (~15 s on a shared CPU)
@pytest.mark.skipif(
    REPORTS is None, reason="Open-i reports not found (make setup extracts them from the wheel)"
)
def test_labels_from_the_openi_reports(release, tmp_path):
    result = import_iu_xray(release, tmp_path / "out", openi_reports=REPORTS)
    studies = {s.id: s for s in result.manifest.studies}
    assert studies["CXR1_1_IM-0001"].labels == []  # CXR1: MeSH "normal"
    assert "cardiomegaly" in studies["CXR2_IM-0652"].labels  # CXR2: MeSH "Cardiomegaly/borderline"
    assert result.notes["studies_without_openi_report"] == 0


def test_not_the_layout(tmp_path):
    (tmp_path / "annotation.json").write_text(json.dumps([1, 2]))
    (tmp_path / "images").mkdir()
    with pytest.raises(ImportFormatError, match="expected an object"):
        import_iu_xray(tmp_path, tmp_path / "out")
