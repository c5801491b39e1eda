"""Import your own data: a folder of DICOM / PNG / JPEG images, a CSV of reports, optionally labels -> a manifest.

``SRC`` is searched recursively for images. Without ``reports`` every image is one
study (``id`` = the file stem). With ``reports`` (a CSV, one row per study) the columns
are matched by name, case and spaces ignored:

* ``id`` (or ``id_column``): the study id; the image is the file under ``SRC`` whose
  name or stem is the id, unless an ``image`` column gives a path relative to ``SRC``;
* the text: ``report`` (one free-text report, split into sections by the manifest
  reader) and / or ``indication``, ``findings``, ``impression``;
* kept when present: ``patient_id``, ``split``, ``site``, ``view``, ``labels``; any
  other column is kept as an extra column.

DICOM headers fill what the CSV does not give: ``PatientID`` -> ``patient_id`` (so
the toolkit's splits keep a patient's studies together) and ``ViewPosition`` ->
``view`` (read with ``stop_before_pixels``; no pixel data is decoded here).

``labels``: a table written by ``medmodal label-reports`` (``id`` + one column per
finding, ``positive`` / ``negative`` / ``uncertain`` / ``absent``, or CheXpert codes
``1`` / ``0`` / ``-1`` / blank); positive findings become the labels, uncertain ones
follow ``uncertain`` (``negative`` by default, or ``positive``) and are listed in the
``uncertain`` column; the ``normal`` column gives no label.

Bad rows (file, row, field): empty or duplicate id, an ``image`` cell that leaves
``SRC`` (absolute or ``..``) or names no file, a label value that is none of the above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pydicom
from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.images import is_dicom
from medmodal.data.importers.common import ImageFolder, ImportJob, ImportResult, TableOptions, label_name
from medmodal.data.importers.tables import read_table, records
from medmodal.data.types import RowProblem

FORMAT = "folder"
TEXT_COLUMNS = ("report", "indication", "findings", "impression")
KEPT_COLUMNS = ("patient_id", "split", "site", "view", "labels")
POSITIVE = {"positive", "1", "1.0"}
UNCERTAIN = {"uncertain", "-1", "-1.0"}
NEGATIVE = {"negative", "absent", "0", "0.0", ""}


def import_folder(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    reports: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    id_column: str = "id",
    uncertain: Literal["negative", "positive"] = "negative",
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from an image folder and a report CSV (see the module docstring)."""
    source = Path(source)
    job = ImportJob.start(FORMAT, out_dir, source, **options)
    images = job.images
    problems: list[RowProblem] = []
    if reports is None:
        rows = [{"id": path.stem, "image": str(path)} for path in images.all_images()]
        source_rows = len(rows)
    else:
        rows, source_rows = _report_rows(Path(reports), id_column, images, problems)
    if labels is not None:
        bad = _add_labels(rows, Path(labels), id_column, uncertain, problems)
        rows = [r for r in rows if r["id"] not in bad]
    for row in rows:
        path = Path(row["image"]) if row.get("image") else None
        if path is not None:
            _fill_from_dicom(row, path)
            row["image"] = images.cell(path)
    return job.finish(rows, source_rows=source_rows, problems=problems)


def _report_rows(
    path: Path, id_column: str, images: ImageFolder, problems: list[RowProblem]
) -> tuple[list[dict], int]:
    table = read_table(path, [])
    table.columns = [c if c == "_row" else c.strip().lower().replace(" ", "_") for c in table.columns]
    key = id_column.strip().lower().replace(" ", "_")
    if key not in table.columns:
        raise ValueError(
            f"{path}: no id column {id_column!r} (columns: {', '.join(c for c in table.columns if c != '_row')})"
        )
    rows: list[dict] = []
    seen: dict[str, int] = {}  # study -> first row
    file = str(path)
    for rec in records(table):
        row_number, study = rec.pop("_row"), rec.pop(key)
        if not study or study in seen:
            problems.append(
                RowProblem(
                    file,
                    row_number,
                    id_column,
                    "empty" if not study else f"duplicate (first at row {seen[study]})",
                    study or None,
                )
            )
            continue
        cell = rec.pop("image", "")
        image = images.relative(cell) if cell else images.by_name(study)
        if cell and image is None:
            problems.append(
                RowProblem(file, row_number, "image", f"no file {cell[:80]!r} inside {images.root}", study)
            )
            continue
        seen[study] = row_number
        rows.append({"id": study, "image": str(image) if image else "", **rec})
    return rows, len(table)


def _add_labels(
    rows: list[dict], path: Path, id_column: str, policy: str, problems: list[RowProblem]
) -> set[str]:
    """Set ``labels`` / ``uncertain`` of the rows from a label table; returns the ids whose label row is bad."""
    table = read_table(path, [])
    key = next((c for c in table.columns if c.strip().lower() in (id_column.lower(), "id")), None)
    if key is None:
        raise ValueError(f"{path}: no id column (the first column of `medmodal label-reports` output is id)")
    findings = [c for c in table.columns if c not in (key, "_row") and c.strip().lower() != "normal"]
    by_id, bad_ids = {}, set()
    for rec in records(table):
        positive, uncertain, bad = [], [], False
        for column in findings:
            value = rec[column].strip().lower()
            if value in POSITIVE or (value in UNCERTAIN and policy == "positive"):
                positive.append(label_name(column))
            if value in UNCERTAIN:
                uncertain.append(label_name(column))
            elif value not in POSITIVE | NEGATIVE:
                problems.append(
                    RowProblem(
                        str(path),
                        rec["_row"],
                        column,
                        f"{value[:20]!r} is not positive / negative / uncertain / absent",
                        rec[key],
                    )
                )
                bad = True
        if bad:
            bad_ids.add(rec[key])
        else:
            by_id[rec[key]] = (sorted(positive), sorted(uncertain))
    for row in rows:
        found = by_id.get(row["id"])
        if found is not None:
            row["labels"], row["uncertain"] = ";".join(found[0]), ";".join(found[1])
    return bad_ids


def _fill_from_dicom(row: dict, path: Path) -> None:
    if row.get("patient_id") and row.get("view") or not is_dicom(path):
        return
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID", "ViewPosition"])
    except Exception:  # noqa: BLE001 - an unreadable header: the manifest read-back names the image
        return
    row.setdefault("patient_id", "")
    row.setdefault("view", "")
    row["patient_id"] = row["patient_id"] or str(header.get("PatientID", "") or "").strip()
    row["view"] = row["view"] or str(header.get("ViewPosition", "") or "").strip()
