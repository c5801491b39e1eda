"""Import the Indiana University chest X-ray reports (Open-i, "NLMCXR") into a manifest.

The collection has 3,955 de-identified radiology reports (XML, one per study;
de-identification left ``XXXX`` in the text) with MeSH annotations, and 7,470
images. The report XMLs ship inside the torchxrayvision wheel as
``torchxrayvision/data/NLMCXR_reports.tgz``; the images are a separate download
(``NLMCXR_png.tgz``, files named ``{image_id}.png``).

What is read from each XML:

* ``<uId id="CXR1">`` -> ``id``. Each report is one study of one patient in this
  collection (there are no patient identifiers), so ``patient_id`` = ``id``;
* ``<AbstractText Label="INDICATION|FINDINGS|IMPRESSION">`` -> the sections;
  ``COMPARISON`` -> extra column ``comparison``. Entities are decoded (also the
  double-escaped ones some reports carry, ``&amp;gt;``), ``<BR>`` becomes a
  space, whitespace is normalised; empty sections stay empty;
* ``<MeSH><major>`` terms (e.g. ``Cardiomegaly/mild``, ``Pleural Effusion/right``,
  or ``normal``) -> extra column ``mesh_major`` (``;``-joined, as written) and,
  through :data:`MESH_LABELS`, the ``labels`` column. ``<minor>`` terms go to
  ``mesh_minor`` (this release has none) and ``<automatic>`` terms (automatic
  indexing of the text) to ``mesh_automatic``; neither feeds the labels;
* ``<parentImage id="CXR1_1_IM-0001-3001">`` -> extra column ``image_ids``
  (``;``-joined, in file order). With ``images_dir``, ``image`` is the first of
  these ids with a ``.png`` / ``.jpg`` / ``.dcm`` file there (no frontal / lateral
  choice is made), else empty.

Labels: a MeSH major term's heading (the part before the first ``/``) is looked
up in :data:`MESH_LABELS` (case and spacing ignored); headings not in the table
(anatomy such as ``Lung/hypoinflation``, ``Spine/degenerative``, rare findings)
give no label. ``normal`` and ``No Indexing`` give no label either, so an empty
``labels`` cell means "no mapped finding", which for ``No Indexing`` reports is
"not annotated" (check ``mesh_major``).

Reports with no text in any section and no image are left out of the manifest
(a row with neither is invalid in the dataset contract); their ids are listed
in the result. All other rows are valid text-only (or image) studies.
"""

from __future__ import annotations

import html
import io
import logging
import os
import re
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pandas as pd

from medmodal.data.manifest import Manifest, read_manifest
from medmodal.data.reports import normalize_whitespace
from medmodal.errors import InputNotFoundError

logger = logging.getLogger(__name__)

OPENI_REPORTS_ENV = "MEDMODAL_OPENI_REPORTS"
OPENI_REPORTS_FILE = "NLMCXR_reports.tgz"
WHEEL_MEMBER = "torchxrayvision/data/NLMCXR_reports.tgz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")

# MeSH major heading -> canonical finding label. Chosen from the headings' frequencies in
# the 3,955 reports (studies per heading in brackets); the names follow CheXpert-style labels.
MESH_LABELS: dict[str, str] = {
    "Opacity": "opacity",  # 536
    "Airspace Disease": "opacity",  # 132
    "Infiltrate": "opacity",  # 68
    "Cardiomegaly": "cardiomegaly",  # 375
    "Pulmonary Atelectasis": "atelectasis",  # 347
    "Calcinosis": "calcification",  # 347
    "Calcified Granuloma": "granuloma",  # 284
    "Granulomatous Disease": "granuloma",  # 112
    "Granuloma": "granuloma",  # 53
    "Cicatrix": "scarring",  # 210
    "Pleural Effusion": "effusion",  # 172
    "Atherosclerosis": "atherosclerosis",  # 132
    "Scoliosis": "scoliosis",  # 124
    "Nodule": "nodule",  # 121
    "Catheters, Indwelling": "device",  # 129
    "Implanted Medical Device": "device",  # 112
    "Surgical Instruments": "device",  # 112
    "Tube, Inserted": "device",  # 33
    "Medical Device": "device",  # 24
    "Stents": "device",  # 19
    "Fractures, Bone": "fracture",  # 90
    "Pulmonary Congestion": "congestion",  # 76
    "Emphysema": "emphysema",  # 62
    "Pulmonary Emphysema": "emphysema",  # 36
    "Pulmonary Disease, Chronic Obstructive": "copd",  # 50
    "Hernia, Hiatal": "hernia",  # 48
    "Pulmonary Edema": "edema",  # 47
    "Pneumonia": "pneumonia",  # 43
    "Consolidation": "consolidation",  # 33
    "Pneumothorax": "pneumothorax",  # 23
    "Pulmonary Fibrosis": "fibrosis",  # 19
    "Mass": "mass",  # 18
}
MANIFEST_COLUMNS = (
    "id", "patient_id", "image", "indication", "findings", "impression", "labels",
    "comparison", "mesh_major", "mesh_minor", "mesh_automatic", "image_ids", "source_file",
)  # fmt: skip

_BR_TAG = re.compile(r"<\s*br\s*/?\s*>", re.IGNORECASE)
_SECTION_LABELS = {"INDICATION": "indication", "FINDINGS": "findings", "IMPRESSION": "impression"}
_HEADING_TO_LABEL = {" ".join(k.lower().split()): v for k, v in MESH_LABELS.items()}


@dataclass
class OpenIReport:
    """The parts of one Open-i report XML that the manifest uses."""

    uid: str
    sections: dict[str, str]  # indication / findings / impression ("" if empty)
    comparison: str = ""
    mesh_major: list[str] = field(default_factory=list)
    mesh_minor: list[str] = field(default_factory=list)
    mesh_automatic: list[str] = field(default_factory=list)
    image_ids: list[str] = field(default_factory=list)
    source: str = ""  # file name inside the archive / folder

    @property
    def labels(self) -> list[str]:
        """Canonical finding labels of the MeSH major terms (sorted, distinct)."""
        return mesh_labels(self.mesh_major)

    @property
    def has_text(self) -> bool:
        return any(self.sections.values())


@dataclass
class OpenIImport:
    """Outcome of :func:`import_openi`."""

    manifest_path: Path
    reports_parsed: int
    rows_written: int
    rows_with_image: int
    skipped_no_content: list[str]  # ids of reports with no text and no image
    manifest: Manifest = field(repr=False)  # the written manifest read back with read_manifest

    def summary(self) -> dict[str, Any]:
        """The import counts plus the read-back manifest's summary under ``"manifest"``."""
        return {
            "manifest_path": str(self.manifest_path),
            "reports_parsed": self.reports_parsed,
            "rows_written": self.rows_written,
            "rows_with_image": self.rows_with_image,
            "skipped_no_content": len(self.skipped_no_content),
            "manifest": self.manifest.summary(),
        }


# ------------------------------------------------------------------------- finding
def find_openi_reports() -> Path | None:
    """The Open-i report archive on this machine, or None.

    Looks at ``$MEDMODAL_OPENI_REPORTS`` (a .tgz, a folder of XMLs or the
    torchxrayvision wheel) if set, otherwise at ``.cache/openi/NLMCXR_reports.tgz``
    in the source checkout and in the working directory (where ``make setup`` puts it).
    """
    configured = os.environ.get(OPENI_REPORTS_ENV)
    if configured:
        path = Path(configured).expanduser()
        if path.exists():
            return path
        logger.warning("%s=%s does not exist", OPENI_REPORTS_ENV, configured)
        return None
    checkout = Path(__file__).resolve().parents[3]
    for root in (checkout, Path.cwd()):
        candidate = root / ".cache" / "openi" / OPENI_REPORTS_FILE
        if candidate.is_file():
            return candidate
    return None


# ------------------------------------------------------------------------- reading
def iter_openi_xml(source: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """``(file name, XML bytes)`` for every report in ``source``, in natural name order (2.xml before 10.xml).

    ``source``: the ``NLMCXR_reports.tgz`` archive, a folder of XML files
    (searched recursively), or the torchxrayvision ``.whl`` carrying the archive.
    """
    source = Path(source)
    if source.is_dir():
        for path in sorted(source.rglob("*.xml"), key=lambda p: _natural_key(p.name)):
            yield path.name, path.read_bytes()
    elif source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            yield from _iter_tar_xml(io.BytesIO(wheel.read(WHEEL_MEMBER)))
    elif source.is_file():
        with open(source, "rb") as archive:
            yield from _iter_tar_xml(archive)
    else:
        raise InputNotFoundError(f"Open-i reports not found: {source}")


def _iter_tar_xml(fileobj: io.IOBase) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=fileobj, mode="r:*") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda m: _natural_key(Path(m.name).name))
        for member in members:
            handle = archive.extractfile(member)
            if handle is not None:
                yield Path(member.name).name, handle.read()


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def parse_openi_report(xml: bytes | str, source: str = "") -> OpenIReport:
    """Parse one report XML (see the module docstring for what is read).

    Raises:
        ValueError: not XML, or no ``<uId id=...>``; the message names ``source``.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as err:
        raise ValueError(f"{source}: not valid XML ({err})") from err
    uid_element = root.find("uId")
    uid = (uid_element.get("id") or "").strip() if uid_element is not None else ""
    if not uid:
        raise ValueError(f"{source}: no <uId id=...> element")
    texts = {
        (element.get("Label") or "").upper(): _clean_text("".join(element.itertext()))
        for element in root.iter("AbstractText")
    }
    mesh = root.find("MeSH")
    return OpenIReport(
        uid=uid,
        sections={name: texts.get(label, "") for label, name in _SECTION_LABELS.items()},
        comparison=texts.get("COMPARISON", ""),
        mesh_major=_terms(mesh, "major"),
        mesh_minor=_terms(mesh, "minor"),
        mesh_automatic=_terms(mesh, "automatic"),
        image_ids=[e.get("id", "").strip() for e in root.iter("parentImage") if e.get("id")],
        source=source,
    )


def mesh_labels(terms: Iterable[str]) -> list[str]:
    """Canonical labels of MeSH major terms via :data:`MESH_LABELS` (sorted, distinct)."""
    labels = set()
    for term in terms:
        heading = " ".join(term.split("/")[0].lower().split())
        if heading in _HEADING_TO_LABEL:
            labels.add(_HEADING_TO_LABEL[heading])
    return sorted(labels)


def _terms(mesh: ElementTree.Element | None, tag: str) -> list[str]:
    if mesh is None:
        return []
    return [t for t in (normalize_whitespace(e.text) for e in mesh.findall(tag)) if t]


def _clean_text(text: str) -> str:
    text = html.unescape(text)  # ElementTree decoded one level; some reports are escaped twice
    return normalize_whitespace(_BR_TAG.sub(" ", text))


# ------------------------------------------------------------------------- writing
def import_openi(
    source: str | os.PathLike, out_dir: str | os.PathLike, images_dir: str | os.PathLike | None = None
) -> OpenIImport:
    """Write ``out_dir/manifest.csv`` from the Open-i reports and read it back.

    Args:
        source: ``NLMCXR_reports.tgz``, a folder of the XMLs, or the torchxrayvision wheel.
        out_dir: created if needed; ``manifest.csv`` is overwritten.
        images_dir: folder of the Open-i images (``{image_id}.png``); ``None`` =
            a text-only dataset.

    Returns:
        Counts and the manifest as read back by
        :func:`~medmodal.data.manifest.read_manifest` (images checked when given).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = _ImageIndex(Path(images_dir), out_dir) if images_dir is not None else None
    reports = [parse_openi_report(xml, name) for name, xml in iter_openi_xml(source)]
    rows, skipped = [], []
    for report in reports:
        image = images.first_image(report.image_ids) if images is not None else ""
        if not image and not report.has_text:
            skipped.append(report.uid)
            continue
        rows.append(_manifest_row(report, image))
    manifest_path = out_dir / "manifest.csv"
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(manifest_path, index=False)
    if skipped:
        logger.info("Open-i: left out %d reports with no text and no image: %s", len(skipped), skipped[:10])
    manifest = read_manifest(
        manifest_path, check_images=images is not None, allow_outside_paths=images is not None
    )
    return OpenIImport(
        manifest_path=manifest_path,
        reports_parsed=len(reports),
        rows_written=len(rows),
        rows_with_image=sum(1 for row in rows if row["image"]),
        skipped_no_content=skipped,
        manifest=manifest,
    )


def _manifest_row(report: OpenIReport, image: str) -> dict[str, str]:
    return {
        "id": report.uid,
        "patient_id": report.uid,  # one study per patient in this collection
        "image": image,
        **report.sections,
        "labels": ";".join(report.labels),
        "comparison": report.comparison,
        "mesh_major": ";".join(report.mesh_major),
        "mesh_minor": ";".join(report.mesh_minor),
        "mesh_automatic": ";".join(report.mesh_automatic),
        "image_ids": ";".join(report.image_ids),
        "source_file": report.source,
    }


class _ImageIndex:
    """Which Open-i image files exist in a folder (listed once), as paths relative to the manifest."""

    def __init__(self, images_dir: Path, manifest_dir: Path):
        if not images_dir.is_dir():
            raise InputNotFoundError(f"images folder not found: {images_dir}")
        self.images_dir = images_dir
        self.manifest_dir = manifest_dir
        self.names = {p.name for p in images_dir.iterdir()}

    def first_image(self, image_ids: Iterable[str]) -> str:
        for image_id in image_ids:
            for suffix in IMAGE_SUFFIXES:
                if image_id + suffix in self.names:
                    return _relative_or_absolute(self.images_dir / (image_id + suffix), self.manifest_dir)
        return ""


def _relative_or_absolute(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive on Windows
        return str(path.resolve())
