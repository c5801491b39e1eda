"""MIMIC-CXR-JPG importer on a tiny release in the published layout (the tables are credentialed, not in the wheel)."""

from __future__ import annotations

import gzip

import pytest

from medmodal.data.importers.chexpert import OBSERVATIONS
from medmodal.data.importers.mimic_cxr import import_mimic_cxr

from .real_tables import write_image

OBS = ",".join(OBSERVATIONS)


def _gz(path, text):
    with gzip.open(path, "wt") as out:
        out.write(text)


@pytest.fixture()
def release(tmp_path):
    src = tmp_path / "mimic-cxr-jpg"
    src.mkdir()
    _gz(src / "mimic-cxr-2.0.0-metadata.csv.gz", "dicom_id,subject_id,study_id,ViewPosition\n"
        "d1,10000032,50414267,LATERAL\nd2,10000032,50414267,PA\nd3,10000033,50414268,AP\n"
        "d4,1000x,50414269,PA\n")  # fmt: skip
    _gz(src / "mimic-cxr-2.0.0-split.csv.gz", "dicom_id,study_id,subject_id,split\n"
        "d1,50414267,10000032,train\nd2,50414267,10000032,train\nd3,50414268,10000033,validate\n")  # fmt: skip
    values = ["" for _ in OBSERVATIONS]
    edema = OBSERVATIONS.index("Edema")
    effusion = OBSERVATIONS.index("Pleural Effusion")
    first = values.copy()
    first[edema], first[effusion] = "-1.0", "1.0"
    second = values.copy()
    second[0] = "yes"
    _gz(src / "mimic-cxr-2.0.0-chexpert.csv.gz", f"subject_id,study_id,{OBS}\n"
        f"10000032,50414267,{','.join(first)}\n10000033,50414268,{','.join(second)}\n")  # fmt: skip
    for subject, study, dicom in (
        ("10000032", "50414267", "d1"),
        ("10000032", "50414267", "d2"),
        ("10000033", "50414268", "d3"),
    ):
        write_image(src / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", size=16)
    report = src / "files" / "p10" / "p10000032" / "s50414267.txt"
    report.write_text(
        "FINAL REPORT\n INDICATION: dyspnea.\n FINDINGS: Small right effusion.\n IMPRESSION: Effusion.\n"
    )
    return src


def test_studies_views_reports_and_policy(release, tmp_path):
    result = import_mimic_cxr(release, tmp_path / "out", uncertain="positive")
    studies = {s.id: s for s in result.manifest.studies}
    assert set(studies) == {"s50414267", "s50414268"}
    first = studies["s50414267"]
    assert first.image.name == "d2.jpg" and first.view == "PA"  # PA preferred over the lateral
    assert first.patient_id == "p10000032" and first.split == "train"
    assert first.labels == ["edema", "pleural_effusion"] and first.extra["uncertain"] == "edema"
    assert (
        first.sections["findings"] == "Small right effusion." and first.sections["impression"] == "Effusion."
    )
    assert studies["s50414268"].split == "val" and studies["s50414268"].labels == []
    assert result.notes["studies_with_report"] == 1
    found = {(p.file.rsplit("/", 1)[-1], p.row, p.field) for p in result.problems}
    assert found == {("mimic-cxr-2.0.0-metadata.csv.gz", 5, "subject_id"),
                     ("mimic-cxr-2.0.0-chexpert.csv.gz", 3, "No Finding")}  # fmt: skip
    negative = import_mimic_cxr(release, tmp_path / "neg")
    assert {s.id: s.labels for s in negative.manifest.studies}["s50414267"] == ["pleural_effusion"]
