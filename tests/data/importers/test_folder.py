"""Bring your own data: a folder of DICOMs + a CSV of reports (+ `medmodal label-reports` output) -> a manifest."""

from __future__ import annotations

import json

import pytest

from medmodal.cli.main import main
from medmodal.data.importers.folder import import_folder
from medmodal.data.importers.tables import ImportFormatError

from ..fixtures import copy_pydicom_file
from .real_tables import write_image

DICOM = "CT_small.dcm"  # a pydicom test file: 128 x 128, MONOCHROME2


def _site(tmp_path):
    dicoms = tmp_path / "dicoms"
    copy_pydicom_file(DICOM, dicoms / "2024" / "acc001.dcm", PatientID="P1", ViewPosition="PA")
    copy_pydicom_file(DICOM, dicoms / "2024" / "acc002.dcm", PatientID="P1", ViewPosition="AP")
    copy_pydicom_file(DICOM, dicoms / "acc003.dcm", PatientID="P2", ViewPosition="PA")
    write_image(dicoms / "acc004.png")
    reports = tmp_path / "reports.csv"
    reports.write_text(
        "Accession,Report\n"
        'acc001,"FINDINGS: Small left pleural effusion. IMPRESSION: Effusion."\n'
        'acc002,"FINDINGS: Heart size is enlarged. IMPRESSION: Cardiomegaly."\n'
        'acc003,"FINDINGS: Clear lungs. IMPRESSION: No acute disease."\n'
        "acc001,duplicate\n"
        'acc005,"FINDINGS: no image for this one."\n'
    )
    return dicoms, reports


def test_dicom_headers_fill_patient_and_view(tmp_path):
    dicoms, reports = _site(tmp_path)
    result = import_folder(
        dicoms, tmp_path / "out", reports=reports, id_column="Accession", check_images=True
    )
    studies = {s.id: s for s in result.manifest.studies}
    assert set(studies) == {"acc001", "acc002", "acc003", "acc005"}  # acc005: text only
    assert (studies["acc001"].patient_id, studies["acc001"].view) == ("P1", "PA")
    assert studies["acc002"].patient_id == "P1" and studies["acc003"].patient_id == "P2"
    assert studies["acc001"].sections["findings"] == "Small left pleural effusion."
    assert studies["acc005"].image is None
    assert [(p.row, p.field) for p in result.problems] == [(5, "Accession")]
    splits = {s.id: s.split for s in studies.values()}
    assert splits["acc001"] == splits["acc002"]  # one patient, one split


def test_without_reports_every_image_is_a_study(tmp_path):
    dicoms, _ = _site(tmp_path)
    result = import_folder(dicoms, tmp_path / "out", copy_images=True)
    assert sorted(s.id for s in result.manifest.studies) == ["acc001", "acc002", "acc003", "acc004"]
    assert result.summary()["images_outside_out"] == 0


@pytest.mark.slow  # loads the medspaCy labeller (~20 s on a shared CPU)
def test_labels_from_label_reports_and_the_commands(tmp_path, capsys):
    """The README's bring-your-own-data commands, up to the manifest."""
    dicoms, reports = _site(tmp_path)
    labels = tmp_path / "labels.csv"
    assert main(["-q", "label-reports", str(reports), str(labels), "--fields", "Report"]) == 0
    capsys.readouterr()
    # label-reports numbers the rows when there is no `id` column; give it the ids
    table = labels.read_text().splitlines()
    ids = ["acc001", "acc002", "acc003", "acc001-dup", "acc005"]
    labels.write_text("\n".join(["id" + table[0][table[0].index(","):]]
                                + [i + line[line.index(","):] for i, line in zip(ids, table[1:])]) + "\n")  # fmt: skip
    assert main(["-q", "import", "folder", str(dicoms), str(tmp_path / "data"), "--reports", str(reports),
                 "--id-column", "Accession", "--labels", str(labels), "--copy-images"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    counts = summary["manifest"]["label_counts"]
    assert counts.get("effusion", counts.get("pleural_effusion")) == 1 and counts.get("cardiomegaly") == 1
    assert summary["rows_with_image"] == 3


def test_image_column_cannot_leave_the_folder(tmp_path):
    dicoms, _ = _site(tmp_path)
    (tmp_path / "r.csv").write_text("id,image,report\na,../reports.csv,x\nb,2024/acc001.dcm,y\n")
    result = import_folder(dicoms, tmp_path / "out", reports=tmp_path / "r.csv")
    assert [(p.row, p.field) for p in result.problems] == [(2, "image")]
    assert [s.id for s in result.manifest.studies] == ["b"]


def test_symlinks_leading_out_are_not_followed(tmp_path):
    outside = write_image(tmp_path / "elsewhere" / "secret.png")
    folder = tmp_path / "images"
    write_image(folder / "ok.png")
    (folder / "secret.png").symlink_to(outside)
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    result = import_folder(folder, tmp_path / "out", copy_images=True)
    assert [s.id for s in result.manifest.studies] == ["ok"]
    (tmp_path / "r.csv").write_text("id,image,report\na,linked/secret.png,x\n")
    with pytest.raises(
        ImportFormatError, match=r"row 2 \(id a\), field 'image': no file 'linked/secret.png'"
    ):
        import_folder(folder, tmp_path / "o2", reports=tmp_path / "r.csv")
