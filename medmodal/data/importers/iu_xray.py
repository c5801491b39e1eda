"""Import IU X-ray in the report-generation layout (R2Gen, Chen et al. 2020): ``annotation.json`` + ``images/<id>/0.png``.

The layout most report-generation code uses for the Indiana University
collection: ``annotation.json`` = ``{"train": [...], "val": [...], "test": [...]}``,
each record ``{"id": "CXR2384_IM-0942", "report": "...", "image_path":
["CXR2384_IM-0942/0.png", "CXR2384_IM-0942/1.png"], "split": "train"}``, the
paths relative to ``images/``. The report is the cleaned findings text.

Manifest: one row per record (``id`` as given; ``patient_id`` = the Open-i report
id before the first ``_``, ``CXR2384``, one patient per report in this
collection), ``image`` = the first ``image_path`` that exists (0.png, frontal in
this layout), all paths in ``image_ids``, ``findings`` = ``report``, and the
split of the list the record is in (kept, so results compare with the
published numbers). ``labels``: the record carries none; with ``openi_reports``
(the ``NLMCXR_reports.tgz`` / folder / torchxrayvision wheel read by
:mod:`~medmodal.data.importers.openi`) each study gets the MeSH labels of its
Open-i report; otherwise run ``medmodal label-reports`` on the manifest.

Bad records (file, record number within its split list, field): not an object,
empty ``id`` or duplicate, ``report`` not a string, ``image_path`` not a list of
strings. Image paths are looked up under ``images/`` only (no absolute paths, no ``..``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import ImageFolder, ImportJob, ImportResult, TableOptions
from medmodal.data.importers.openi import iter_openi_xml, parse_openi_report
from medmodal.data.importers.tables import ImportFormatError
from medmodal.data.types import RowProblem
from medmodal.errors import InputNotFoundError

FORMAT = "iu-xray"
ANNOTATION = "annotation.json"
SPLIT_KEYS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
MAX_ANNOTATION_BYTES = 512 * 1024 * 1024


def import_iu_xray(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    openi_reports: str | os.PathLike | None = None,
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from ``annotation.json`` (see the module docstring).

    Args:
        source: the folder holding ``annotation.json`` (and ``images/``), or the JSON file.
        images: the folder the ``image_path`` entries are relative to (default: ``images/`` next to the JSON).
        openi_reports: Open-i report XMLs to take MeSH labels from (optional).
    """
    source = Path(source)
    annotation = source / ANNOTATION if source.is_dir() else source
    records = _read_annotation(annotation)
    job = ImportJob.start(FORMAT, out_dir, annotation.parent / "images", **options)
    labels = _openi_labels(openi_reports) if openi_reports is not None else None
    problems: list[RowProblem] = []
    rows: list[dict] = []
    seen: set[str] = set()
    for split_key, number, record in records:
        row = _row(record, (str(annotation), number, split_key), job.images, seen, problems)
        if row is not None:
            row["labels"] = ";".join(labels.get(row["patient_id"], [])) if labels is not None else ""
            rows.append(row)
    notes: dict[str, str | int] = {
        "labels_from": "Open-i MeSH" if labels is not None else "none (run medmodal label-reports)"
    }
    if labels is not None:
        notes["studies_without_openi_report"] = sum(1 for r in rows if r["patient_id"] not in labels)
    return job.finish(rows, source_rows=len(records), problems=problems, notes=notes)


def _read_annotation(path: Path) -> list[tuple[str, int, object]]:
    """``(split key, 1-based record number in that list, record)`` for every record."""
    if not path.is_file():
        raise InputNotFoundError(f"{path}: annotation.json not found")
    if path.stat().st_size > MAX_ANNOTATION_BYTES:
        raise ImportFormatError(f"{path}: larger than {MAX_ANNOTATION_BYTES // 2**20} MiB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not any(k in SPLIT_KEYS for k in data):
        raise ImportFormatError(f'{path}: expected an object {{"train": [...], "val": [...], "test": [...]}}')
    records = []
    for key, items in data.items():
        if key not in SPLIT_KEYS:
            continue
        if not isinstance(items, list):
            raise ImportFormatError(f"{path}: '{key}' must be a list of records")
        records += [(key, i, item) for i, item in enumerate(items, start=1)]
    return records


def _row(record, where: tuple[str, int, str], image_folder: ImageFolder, seen: set[str],
         problems: list[RowProblem]) -> dict[str, str] | None:  # fmt: skip
    file, number, split_key = where
    label = f"{split_key}[{number}]"

    def problem(field_name: str, message: str, study: str | None = None) -> None:
        problems.append(RowProblem(file, number, f"{label}.{field_name}", message, study))

    if not isinstance(record, dict):
        problem("<record>", "not an object")
        return None
    study_id = str(record.get("id") or "").strip()
    report, paths = record.get("report", ""), record.get("image_path", [])
    if not study_id or study_id in seen:
        problem("id", "empty" if not study_id else "duplicate", study_id or None)
        return None
    if not isinstance(report, str):
        problem("report", "not a string", study_id)
        return None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        problem("image_path", "not a list of strings", study_id)
        return None
    seen.add(study_id)
    found = next((f for f in (image_folder.relative(p) for p in paths) if f is not None), None)
    return {"id": study_id, "patient_id": study_id.split("_")[0], "image": image_folder.cell(found) if found else "",
            "findings": " ".join(report.split()), "split": SPLIT_KEYS[split_key], "image_ids": ";".join(paths)}  # fmt: skip


def _openi_labels(source: str | os.PathLike) -> dict[str, list[str]]:
    """``{Open-i uid ("CXR2384"): MeSH labels}``."""
    return {
        report.uid: report.labels
        for report in (parse_openi_report(xml, name) for name, xml in iter_openi_xml(source))
    }
