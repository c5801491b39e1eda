"""Open-i (Indiana University) importer, on the real 3,955 report XMLs.

The archive comes from the torchxrayvision wheel (``make setup`` extracts it to
``.cache/openi/NLMCXR_reports.tgz``; ``$MEDMODAL_OPENI_REPORTS`` points elsewhere).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medmodal.data.importers.openi import (
    MESH_LABELS,
    OPENI_REPORTS_ENV,
    find_openi_reports,
    import_openi,
    iter_openi_xml,
    mesh_labels,
    parse_openi_report,
)
from medmodal.data.manifest import read_manifest

from .fixtures import write_png

REPORTS = find_openi_reports()
needs_reports = pytest.mark.skipif(
    REPORTS is None,
    reason=f"Open-i reports not found: run `make setup` (extracts .cache/openi/NLMCXR_reports.tgz "
    f"from the torchxrayvision wheel) or set {OPENI_REPORTS_ENV}",
)


@pytest.fixture(scope="module")
def raw_xml() -> dict[str, bytes]:
    return dict(iter_openi_xml(REPORTS))


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("openi")
    return import_openi(REPORTS, out)


@needs_reports
def test_all_reports_are_read(imported):
    assert imported.reports_parsed == 3955
    assert imported.rows_written + len(imported.skipped_no_content) == 3955
    assert len(imported.skipped_no_content) == 28  # reports with every section empty
    studies = imported.manifest.studies
    assert len(studies) == imported.rows_written == 3927
    ids = [s.id for s in studies]
    assert all(re.fullmatch(r"CXR\d+", i) for i in ids) and len(set(ids)) == len(ids)
    assert all(s.patient_id == s.id for s in studies)  # one study per patient in this collection
    assert all(s.image is None for s in studies)  # text-only without images_dir


@needs_reports
def test_section_coverage(imported):
    studies = imported.manifest.studies
    with_findings = sum(1 for s in studies if s.sections["findings"])
    with_impression = sum(1 for s in studies if s.sections["impression"])
    assert with_findings == 3425  # 86.6 % of the 3,955 reports
    assert with_impression == 3921  # 99.1 %
    assert imported.manifest.summary()["missing_text"] == 0


@needs_reports
def test_a_known_report(imported):
    cxr1 = next(s for s in imported.manifest.studies if s.id == "CXR1")
    assert cxr1.sections == {
        "indication": "Positive TB test",
        "findings": "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary "
        "edema. There is no focal consolidation. There are no XXXX of a pleural effusion. There is no "
        "evidence of pneumothorax.",
        "impression": "Normal chest x-XXXX.",
    }
    assert cxr1.labels == []  # MeSH "normal"
    assert cxr1.extra["mesh_major"] == "normal"
    assert cxr1.extra["comparison"] == "None."
    assert cxr1.extra["image_ids"] == "CXR1_1_IM-0001-3001;CXR1_1_IM-0001-4001"


@needs_reports
def test_entities_markup_and_empty_sections(raw_xml):
    metastases = parse_openi_report(raw_xml["1329.xml"], "1329.xml")  # "&lt;BR&gt;" in the text
    assert metastases.sections["impression"] == (
        "At XXXX 2 right lung pulmonary nodules concerning for metastatic disease"
    )
    myeloma = parse_openi_report(raw_xml["146.xml"], "146.xml")  # "&amp;gt;" (escaped twice), empty FINDINGS
    assert myeloma.sections["findings"] == ""
    assert "&" not in myeloma.sections["impression"]
    assert myeloma.mesh_major == ["Technical Quality of Image Unsatisfactory", "Lung/hypoinflation",
                                  "Expansile Bone Lesions/ribs/right"]  # fmt: skip
    assert myeloma.mesh_automatic[0] == "multiple myeloma"
    assert myeloma.image_ids == [
        "CXR146_IM-0298-1001-0001",
        "CXR146_IM-0298-1001-0002",
        "CXR146_IM-0298-2001",
    ]


@needs_reports
def test_label_counts_equal_the_raw_mesh_counts(imported, raw_xml):
    """Counted from the raw XML text with a regex, independently of the parser."""
    written = {s.extra["source_file"] for s in imported.manifest.studies}
    terms_of: dict[str, list[str]] = {}
    for term, label in MESH_LABELS.items():
        terms_of.setdefault(label, []).append(term)
    counts = imported.manifest.summary()["label_counts"]
    for label, terms in terms_of.items():
        pattern = re.compile(
            rb"<major>\s*(?:" + b"|".join(re.escape(t.encode()) for t in terms) + rb")\s*(?:/[^<]*)?</major>",
            re.IGNORECASE,
        )
        raw = sum(1 for name, xml in raw_xml.items() if name in written and pattern.search(xml))
        assert counts[label] == raw, label
    assert counts["cardiomegaly"] == 375
    assert counts["effusion"] == 161
    assert counts["pneumothorax"] == 23


def test_mesh_mapping_uses_the_heading_only():
    assert mesh_labels(["Cardiomegaly/mild", "Pleural Effusion/right", "Lung/hypoinflation"]) == [
        "cardiomegaly", "effusion",
    ]  # fmt: skip
    assert mesh_labels(["normal"]) == [] and mesh_labels(["No Indexing"]) == []
    assert mesh_labels(["calcified granuloma/lung", "Subcutaneous  Emphysema"]) == ["granuloma"]


@needs_reports
def test_the_manifest_reads_back_without_problems(imported):
    manifest = read_manifest(imported.manifest_path, on_bad_row="error")
    assert len(manifest) == 3927 and manifest.problems == []
    assert manifest.summary()["missing_image"] == 3927
    assert set(manifest.label_names) == set(MESH_LABELS.values())


@needs_reports
def test_folder_source_and_images(tmp_path, raw_xml):
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    for name in ("1.xml", "2.xml", "614.xml"):  # 614 has no text at all
        (xml_dir / name).write_bytes(raw_xml[name])
    images = tmp_path / "png"
    write_png(images / "CXR1_1_IM-0001-4001.png")  # the second image of CXR1; the first is absent
    write_png(images / "CXR614_IM-2200-1001.png")
    result = import_openi(xml_dir, tmp_path / "out", images_dir=images)
    assert result.reports_parsed == 3 and result.skipped_no_content == []
    by_id = {s.id: s for s in result.manifest.studies}
    assert by_id["CXR1"].image == (images / "CXR1_1_IM-0001-4001.png").resolve()
    assert by_id["CXR2"].image is None
    assert by_id["CXR614"].image is not None and not any(by_id["CXR614"].sections.values())  # image-only
    assert result.manifest.problems == []
    assert result.summary()["rows_with_image"] == 2
    assert (tmp_path / "out" / "manifest.csv").read_text().count("../png/") == 2  # relative paths


def test_finding_the_archive_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(OPENI_REPORTS_ENV, str(tmp_path))
    assert find_openi_reports() == tmp_path
    monkeypatch.setenv(OPENI_REPORTS_ENV, str(tmp_path / "absent.tgz"))
    assert find_openi_reports() is None


WHEELS = sorted(
    Path(__file__).resolve().parents[2].joinpath(".cache", "wheels").glob("torchxrayvision-*.whl")
)


@pytest.mark.skipif(not WHEELS, reason="torchxrayvision wheel not in .cache/wheels (make setup fetches it)")
def test_the_wheel_itself_is_a_source(tmp_path):
    wheel = shutil.copy(WHEELS[-1], tmp_path / WHEELS[-1].name)
    names = [name for name, _ in iter_openi_xml(wheel)]
    assert len(names) == 3955 and names[:3] == ["1.xml", "2.xml", "3.xml"]
