"""Import MIMIC-CXR-JPG 2.0 (Johnson et al. 2019) -> a manifest, with the MIMIC-CXR report texts where present.

The release folder holds ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (``dicom_id``,
``subject_id``, ``study_id``, ``ViewPosition``), ``mimic-cxr-2.0.0-split.csv[.gz]``
(``dicom_id``, ``study_id``, ``subject_id``, ``split`` = train / validate / test),
``mimic-cxr-2.0.0-chexpert.csv[.gz]`` (``subject_id``, ``study_id`` and the 14
CheXpert observations, coded as in :mod:`~medmodal.data.importers.chexpert`) and
``files/p10/p10000032/s50414267/<dicom_id>.jpg``. The reports are in the
separate MIMIC-CXR release: ``files/p10/p10000032/s50414267.txt``
(``reports``; the same layout, so the JPG folder works if they were unpacked there).

Manifest: one row per study (``id`` = ``s50414267``, ``patient_id`` = ``p10000032``),
its image the first PA view, else AP, else the first image; all ``dicom_id`` s in
``image_ids``; ``report`` = the report text (split into sections by the
manifest reader; the ``FINAL REPORT`` title line dropped); labels and the ``uncertain`` column as for CheXpert (policy
``uncertain``); the official split (``validate`` -> ``val``). A study without a
labeller row (no findings / impression to label) has no labels.

Bad rows (file, row, field): non-numeric ids, an unknown split, a labeller value
that is not 1 / 0 / -1 / blank.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.chexpert import OBSERVATIONS, UncertainPolicy, observation_labels
from medmodal.data.importers.common import ImageFolder, ImportJob, ImportResult, TableOptions
from medmodal.data.importers.tables import find_table, read_table, records
from medmodal.data.types import RowProblem
from medmodal.errors import InputNotFoundError

FORMAT = "mimic-cxr"
METADATA = ("mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz", "*metadata.csv*")
SPLIT = ("mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz", "*split.csv*")
LABELS = ("mimic-cxr-2.0.0-chexpert.csv", "mimic-cxr-2.0.0-chexpert.csv.gz", "*chexpert.csv*")
SPLITS = {"train": "train", "validate": "val", "test": "test"}
VIEW_ORDER = {"PA": 0, "AP": 1}
MAX_REPORT_BYTES = 1_000_000


def import_mimic_cxr(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    reports: str | os.PathLike | None = None,
    uncertain: UncertainPolicy = "negative",
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from a MIMIC-CXR-JPG folder (see the module docstring).

    Args:
        source: the release folder with the three tables.
        images: the folder holding ``files/`` (default: ``source``).
        reports: the folder holding the reports' ``files/`` (default: ``source``; absent reports = no text).
    """
    source = Path(source)
    if not source.is_dir():
        raise InputNotFoundError(f"{source}: not a MIMIC-CXR-JPG folder")
    job = ImportJob.start(FORMAT, out_dir, source, **options)
    reports_root = Path(reports) if reports is not None else source
    problems: list[RowProblem] = []
    studies, source_rows = _studies(find_table(source, METADATA, "metadata table"), problems)
    split_rows = _splits(find_table(source, SPLIT, "split table"), studies, problems)
    label_rows = _labels(find_table(source, LABELS, "CheXpert label table"), uncertain, problems)
    rows, with_report = [], 0
    for study_id, study in studies.items():
        report = _report(reports_root, study["subject"], study_id)
        with_report += bool(report)
        labels, uncertain_labels = label_rows.get(study_id, ([], []))
        image, view = _first_image(study, job.images)
        rows.append({"id": f"s{study_id}", "patient_id": f"p{study['subject']}", "image": image,
                     "report": report, "labels": ";".join(labels), "split": split_rows.get(study_id, ""),
                     "uncertain": ";".join(uncertain_labels), "view": view,
                     "image_ids": ";".join(d for d, _ in study["images"])})  # fmt: skip
    notes = {"uncertain_policy": uncertain, "studies_with_report": with_report,
             "studies_without_labeller_row": sum(1 for s in studies if s not in label_rows)}  # fmt: skip
    return job.finish(rows, source_rows=source_rows, problems=problems, notes=notes)


def _studies(path: Path, problems: list[RowProblem]) -> tuple[dict[str, dict], int]:
    table = read_table(path, ["dicom_id", "subject_id", "study_id"])
    studies: dict[str, dict] = {}
    for rec in records(table):
        if not _ids_ok(rec, str(path), problems):
            continue
        if not rec["dicom_id"]:
            problems.append(RowProblem(str(path), rec["_row"], "dicom_id", "empty"))
            continue
        study = studies.setdefault(
            rec["study_id"], {"subject": rec["subject_id"], "study": rec["study_id"], "images": []}
        )
        study["images"].append((rec["dicom_id"], rec.get("ViewPosition", "")))
    return studies, len(table)


def _ids_ok(rec: dict[str, Any], file: str, problems: list[RowProblem]) -> bool:
    for column in ("subject_id", "study_id"):
        if not rec[column].isdigit():
            problems.append(RowProblem(file, rec["_row"], column, f"not a number: {rec[column][:20]!r}"))
            return False
    return True


def _splits(path: Path, studies: dict[str, dict], problems: list[RowProblem]) -> dict[str, str]:
    table = read_table(path, ["study_id", "split"])
    splits: dict[str, str] = {}
    for rec in records(table):
        split = SPLITS.get(rec["split"].lower())
        if split is None:
            problems.append(
                RowProblem(
                    str(path), rec["_row"], "split", f"{rec['split'][:20]!r} is not train / validate / test"
                )
            )
        else:
            splits[rec["study_id"]] = split
    return splits


def _labels(
    path: Path, policy: UncertainPolicy, problems: list[RowProblem]
) -> dict[str, tuple[list[str], list[str]]]:
    table = read_table(path, ["study_id"])
    columns = [c for c in OBSERVATIONS if c in table.columns]
    labels = {}
    for rec in records(table):
        parsed = observation_labels(
            rec, columns, policy, (str(path), rec["_row"], f"s{rec['study_id']}"), problems
        )
        if parsed is not None:
            labels[rec["study_id"]] = parsed
    return labels


def _first_image(study: dict, image_folder: ImageFolder) -> tuple[str, str]:
    subject = study["subject"]
    for dicom_id, view in sorted(study["images"], key=lambda d: VIEW_ORDER.get(d[1].upper(), 2)):
        relative = f"files/p{subject[:2]}/p{subject}/s{study['study']}/{dicom_id}.jpg"
        found = image_folder.relative(relative) or image_folder.by_name(f"{dicom_id}.jpg")
        if found is not None:
            return image_folder.cell(found), view
    return "", ""


def _report(root: Path, subject: str, study_id: str) -> str:
    path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}.txt"
    if not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    return re.sub(r"^\s*FINAL REPORT\s*", "", text)  # the title line every report starts with
