"""Validation of the report labeler against Open-i MeSH tags."""

import numpy as np
import pytest

from medmodal.data.importers.openi import OpenIReport, find_openi_reports
from medmodal.labeling.validate_openi import (
    agreement,
    format_validation,
    is_indexed,
    reference_matrix,
    validate_on_openi,
)


def report(uid, findings, impression, major):
    return OpenIReport(uid=uid, sections={"indication": "", "findings": findings, "impression": impression}, mesh_major=major)


def xml(uid, findings, impression, major):
    terms = "".join(f"<major>{t}</major>" for t in major)
    return (
        f'<eCitation><uId id="{uid}"/><MedlineCitation><Article><Abstract>'
        f'<AbstractText Label="FINDINGS">{findings}</AbstractText>'
        f'<AbstractText Label="IMPRESSION">{impression}</AbstractText>'
        f"</Abstract></Article></MedlineCitation><MeSH>{terms}</MeSH></eCitation>"
    )


def test_reference_from_mesh_terms():
    reports = [
        report("CXR1", "", "", ["normal"]),
        report("CXR2", "", "", ["Cardiomegaly/mild", "Pleural Effusion/right", "Lung/hypoinflation"]),
        report("CXR3", "", "", ["Airspace Disease/lung/base/left"]),
    ]
    findings = ["cardiomegaly", "effusion", "opacity", "normal"]
    np.testing.assert_array_equal(reference_matrix(reports, findings), [[0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 0]])
    assert not is_indexed(report("CXR4", "", "", ["No Indexing"])) and not is_indexed(report("CXR5", "", "", []))
    assert is_indexed(reports[0])


def test_agreement_counts():
    reference = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    predicted = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    result = agreement(reference, predicted, ["a", "b"])
    assert result["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2, "true_positive": 1}
    assert result["b"]["precision"] == pytest.approx(2 / 3) and result["b"]["recall"] == 1.0


def test_validate_on_a_folder_of_reports(tmp_path, labeler):
    reports = [
        ("CXR1", "Heart size normal. Lungs are clear.", "No acute disease.", ["normal"]),
        ("CXR2", "The heart is enlarged. Small right pleural effusion.", "Cardiomegaly and effusion.",
         ["Cardiomegaly/mild", "Pleural Effusion/right"]),
        ("CXR3", "No pneumothorax. Possible nodule in the right upper lobe.", "", ["Nodule/lung/upper lobe/right"]),
        ("CXR4", "Some text.", "", ["No Indexing"]),
    ]
    for i, r in enumerate(reports, 1):
        (tmp_path / f"{i}.xml").write_text(xml(*r))
    findings = ("cardiomegaly", "effusion", "nodule", "pneumothorax", "normal")
    result = validate_on_openi(tmp_path, findings=findings, labeler=labeler, uncertain_as="positive")
    assert result["reports"] == 3 and result["skipped_not_indexed"] == 1
    per = result["per_finding"]
    # hand-checked: every MeSH finding is found; the negated pneumothorax is not predicted
    for finding in ("cardiomegaly", "effusion", "nodule", "normal"):
        assert per[finding]["f1"] == 1.0, finding
    assert per["pneumothorax"]["predicted"] == 0
    # the uncertain nodule counts as present only with uncertain_as="positive" (the default is negative)
    strict = validate_on_openi(tmp_path, findings=findings, labeler=labeler)
    assert strict["per_finding"]["nodule"]["predicted"] == 0
    assert "| nodule | 1 | 1 | 1.000 | 1.000 | 1.000 |" in format_validation(result)


@pytest.mark.skipif(find_openi_reports() is None, reason="Open-i reports not set up (make setup)")
def test_real_reports_agree_for_common_findings(labeler):
    result = validate_on_openi(limit=300, labeler=labeler, findings=("cardiomegaly", "effusion", "normal"))
    assert result["reports"] == 300
    # measured on all 3,860 indexed reports: F1 0.91 (cardiomegaly), 0.91 (effusion), 0.78 (normal)
    assert result["per_finding"]["cardiomegaly"]["f1"] > 0.8
    assert result["per_finding"]["normal"]["f1"] > 0.65


def test_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Open-i reports not found"):
        validate_on_openi(tmp_path / "nothing.tgz")
