"""Import VinDr-CXR (Nguyen et al. 2022; the Kaggle VinBigData release) -> a manifest with boxes from several readers.

Table: one row per (image, reader, finding): ``image_id``, ``rad_id`` (``R1`` ... ``R17``),
``class_name`` (``No finding`` = the reader saw nothing), ``x_min, y_min, x_max, y_max``
(pixels of the original DICOM; blank for image-level findings and ``No finding``);
the Kaggle copy adds ``class_id``. Optional ``width`` / ``height`` columns (added
by downsampled re-releases) scale the boxes to the stored image; otherwise the
boxes are taken to be in the stored image's pixels (the DICOMs), and the manifest
read-back names any box beyond a smaller image. Images: ``<image_id>.dicom`` /
``.dcm`` / ``.png`` / ``.jpg`` anywhere under the image folder.

Merging, per image: a finding is a label when at least ``min_readers`` readers
marked it (default 1: any reader); ``boxes`` keeps every reader's box of those
findings with its reader (``{"label", "box", "reader"}``; the manifest uses
label and box, the reader stays for consensus methods such as weighted box
fusion); extra columns ``readers`` (who read the image) and ``reader_labels``
(JSON ``{reader: [findings]}``). Split: ``train`` tables -> none (the toolkit
assigns by patient = image, as the release has no patient ids), ``test`` -> test.

Bad rows (file, row, field): empty ``image_id`` or ``rad_id``, a non-numeric
coordinate, ``x_max <= x_min`` or ``y_max <= y_min``, a box on ``No finding``.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import (
    ImageFolder,
    ImportJob,
    ImportResult,
    TableOptions,
    boxes_cell,
    label_name,
    scaled_boxes,
    stored_size,
)
from medmodal.data.importers.tables import SourceTable, TableFormat, numbers
from medmodal.data.types import RowProblem

FORMAT = "vindr-cxr"
COORDINATES = ("x_min", "y_min", "x_max", "y_max")
TABLE = TableFormat(
    ("annotations_train.csv", "train.csv", "vinbigdata-train.csv*", "*train*.csv*"),
    "VinDr-CXR annotation table",
    ("image_id", "rad_id", "class_name", *COORDINATES),
)
NO_FINDING = "no_finding"


def import_vindr(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    min_readers: int = 1,
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from a VinDr-CXR / VinBigData annotation table (see the module docstring)."""
    if min_readers < 1:
        raise ValueError(f"min_readers must be >= 1, got {min_readers}")
    job, table = ImportJob.with_table(FORMAT, TABLE, Path(source), out_dir, **options)
    problems: list[RowProblem] = []
    marks = _reader_marks(table, problems)
    split = "test" if "test" in table.path.name.lower() else ""
    rows = [_merged_row(image_id, found, min_readers, split, job.images) for image_id, found in marks.items()]
    return job.finish(rows, source_rows=len(table), problems=problems, notes={"min_readers": min_readers})


def _reader_marks(table: SourceTable, problems: list[RowProblem]) -> dict[str, dict]:
    """``{image_id: {"readers": {rad: set(findings)}, "boxes": [...], "size": (w, h) | None}}``."""
    marks: dict[str, dict] = {}
    file = table.file
    for rec in table.records():
        row, image_id, reader = rec["_row"], rec["image_id"], rec["rad_id"]
        for column in ("image_id", "rad_id"):
            if not rec[column]:
                problems.append(RowProblem(file, row, column, "empty", image_id or None))
        if not image_id or not reader:
            continue
        finding = label_name(rec["class_name"])
        if not finding:
            problems.append(RowProblem(file, row, "class_name", "empty", image_id))
            continue
        box = _box(rec, file, problems)
        if box is False:
            continue
        if box is not None and finding == NO_FINDING:
            problems.append(RowProblem(file, row, "x_min", "a box on 'No finding'", image_id))
            continue
        entry = marks.setdefault(image_id, {"readers": {}, "boxes": [], "size": _original_size(rec)})
        findings = entry["readers"].setdefault(reader, set())  # a reader who saw nothing still read it
        if finding != NO_FINDING:
            findings.add(finding)
        if box is not None:
            entry["boxes"].append({"label": finding, "box": box, "reader": reader})
    return marks


def _box(rec: dict[str, Any], file: str, problems: list[RowProblem]) -> list[float] | None | bool:
    """The box, None for an image-level row (all blank), False for a bad one (problem recorded)."""
    cells = [rec[c] for c in COORDINATES]
    if not any(cells):
        return None
    values = numbers(rec, COORDINATES, file, problems, rec["image_id"])
    if values is None:
        return False
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0 or min(values) < 0:
        problems.append(RowProblem(file, rec["_row"], "x_max", f"not a box: {values}", rec["image_id"]))
        return False
    return values


def _original_size(rec: dict[str, str]) -> tuple[float, float] | None:
    try:
        width, height = float(rec["width"]), float(rec["height"])
    except (KeyError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _merged_row(
    image_id: str, entry: dict, min_readers: int, split: str, image_folder: ImageFolder
) -> dict[str, str]:
    votes: dict[str, int] = defaultdict(int)
    for findings in entry["readers"].values():
        for finding in findings:
            votes[finding] += 1
    labels = sorted(f for f, n in votes.items() if n >= min_readers)
    path = image_folder.by_name(image_id)
    boxes = [b for b in entry["boxes"] if b["label"] in labels]
    if boxes and path is not None and entry["size"] is not None:
        stored = stored_size(path)
        if stored is not None:
            boxes = scaled_boxes(boxes, stored[1] / entry["size"][0], stored[0] / entry["size"][1])
    readers = sorted(entry["readers"])
    return {"id": image_id, "patient_id": image_id, "image": image_folder.cell(path) if path is not None else "",
            "labels": ";".join(labels), "boxes": boxes_cell(boxes), "split": split, "readers": ";".join(readers),
            "reader_labels": json.dumps({r: sorted(entry["readers"][r]) for r in readers}, separators=(",", ":"))}  # fmt: skip
