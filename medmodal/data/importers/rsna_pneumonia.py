"""Import the RSNA Pneumonia Detection Challenge (Shih et al. 2019) -> a manifest with boxes.

Table ``stage_2_train_labels.csv`` (also inside ``.zip``): one row per box,
``patientId, x, y, width, height, Target`` (``Target`` 1 = lung opacity suggestive
of pneumonia, with a box; 0 = none, blank coordinates), in pixels of the
1024 x 1024 DICOMs ``stage_2_train_images/<patientId>.dcm``. The optional
``stage_2_detailed_class_info.csv`` (``patientId, class``: ``Lung Opacity`` /
``No Lung Opacity / Not Normal`` / ``Normal``) becomes the extra column ``class``.

Manifest: one row per image (``id`` = ``patient_id`` = ``patientId``, the
release's one image per patient), ``labels`` = ``pneumonia`` when ``Target`` is 1,
``boxes`` scaled from the 1,024 grid to the stored image (downsampled PNG copies
get matching boxes). No split (the toolkit assigns one).

Bad rows (file, row, field): empty ``patientId``, ``Target`` not 0 / 1, a target-1
row without a positive-size box, a target-0 row with one, images whose rows disagree on ``Target``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import ImportJob, ImportResult, TableOptions, boxes_at_stored_size
from medmodal.data.importers.tables import SourceTable, TableFormat, numbers, read_table
from medmodal.data.types import RowProblem

FORMAT = "rsna-pneumonia"
TABLE = TableFormat(
    ("stage_2_train_labels.csv", "stage_2_train_labels.csv.zip", "*train_labels.csv*"),
    "RSNA stage_2_train_labels table",
    ("patientId", "x", "y", "width", "height", "Target"),
)
BOX_COLUMNS = ("x", "y", "width", "height")
CLASS_TABLE = "stage_2_detailed_class_info.csv"
LABEL = "pneumonia"
RELEASE_SIZE = 1024


def import_rsna_pneumonia(
    source: str | os.PathLike, out_dir: str | os.PathLike, **options: Unpack[TableOptions]
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from the RSNA pneumonia labels and images (see the module docstring)."""
    source = Path(source)
    job, table = ImportJob.with_table(FORMAT, TABLE, source, out_dir, **options)
    problems: list[RowProblem] = []
    targets = _targets(table, problems)
    classes = _classes(source / CLASS_TABLE) if source.is_dir() else {}
    rows = []
    for patient, (target, boxes) in targets.items():
        path = job.images.by_name(patient)
        rows.append({"id": patient, "patient_id": patient, "image": job.images.cell(path) if path else "",
                     "labels": LABEL if target else "", "boxes": boxes_at_stored_size(boxes, path, RELEASE_SIZE),
                     "class": classes.get(patient, "")})  # fmt: skip
    return job.finish(rows, source_rows=len(table), problems=problems)


def _targets(table: SourceTable, problems: list[RowProblem]) -> dict[str, tuple[int, list[dict]]]:
    found: dict[str, tuple[int, list[dict]]] = {}
    bad: set[str] = set()
    file = table.file
    for row, patient, rec in table.keyed_records("patientId", problems):
        if rec["Target"] not in ("0", "1"):
            problems.append(RowProblem(file, row, "Target", f"{rec['Target'][:20]!r} is not 0 or 1", patient))
            continue
        target = int(rec["Target"])
        box = _box(rec, target, file, problems)
        if box is False:
            bad.add(patient)
            continue
        previous = found.setdefault(patient, (target, []))
        if previous[0] != target:
            problems.append(
                RowProblem(file, row, "Target", f"{target} here, {previous[0]} on an earlier row", patient)
            )
            bad.add(patient)
        elif box is not None:
            previous[1].append({"label": LABEL, "box": box})
    return {p: v for p, v in found.items() if p not in bad}


def _box(
    rec: dict[str, Any], target: int, file: str, problems: list[RowProblem]
) -> list[float] | None | bool:
    row, patient = rec["_row"], rec["patientId"]
    if target == 0:
        if any(rec[c] for c in BOX_COLUMNS):
            problems.append(RowProblem(file, row, "x", "a box on a Target 0 row", patient))
            return False
        return None
    values = numbers(rec, BOX_COLUMNS, file, problems, patient)
    if values is None:
        return False
    x, y, w, h = values
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        problems.append(
            RowProblem(file, row, "width", f"not a box: x {x}, y {y}, width {w}, height {h}", patient)
        )
        return False
    return [x, y, x + w, y + h]


def _classes(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    table = read_table(path, ["patientId", "class"])
    return dict(zip(table["patientId"], table["class"]))
