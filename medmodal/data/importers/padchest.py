"""Import PadChest (Bustos et al., Medical Image Analysis 2020) -> a manifest with its Spanish report text.

Table ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``: one row per
image, with ``ImageID`` (``<name>.png``), ``ImageDir`` (the zip folder number,
``0`` ... ``54``), ``StudyID``, ``PatientID``, ``Projection`` (PA, L, AP,
AP_horizontal, COSTAL, EXCLUDE), ``Report`` (the radiologist's report in
Spanish, as the release gives it: lower case, stemmed, de-identified),
``Labels`` (a Python-style list such as ``['pleural effusion', 'cardiomegaly']``;
``normal`` = no finding), ``MethodLabel`` (``Physician`` = labelled by hand,
``RNN_model`` = labelled by the authors' model).

Manifest: one row per image (``id`` = the image stem, ``patient_id`` =
``PatientID``, ``study_id`` kept), ``labels`` = the findings in manifest form
(``pleural effusion`` -> ``pleural_effusion``; ``normal`` gives none),
``findings`` = the Spanish report text unchanged (it is no English report; the
finding labeller is English-only, so it should not be run on it),
``report_language`` = ``es``, and the columns ``view``, ``label_method``,
``localizations``. The images are ``<ImageDir>/<ImageID>`` under the image
folder, or found by name anywhere under it. No split (the toolkit assigns one by patient).

Bad rows (file, row, field): empty ``ImageID`` or duplicate, a ``Labels`` cell
that is not a list of strings. The cell is read with :func:`ast.literal_eval`,
which evaluates literals only (never code), after a length check.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import ImportJob, ImportResult, TableOptions, label_name
from medmodal.data.importers.tables import MAX_CELL_CHARS, TableFormat
from medmodal.data.types import RowProblem

FORMAT = "padchest"
TABLE = TableFormat(
    ("PADCHEST_chest_x_ray_images_labels_160K*.csv*", "*PADCHEST*.csv*", "*padchest*.csv*"),
    "PadChest label table",
    ("ImageID", "PatientID", "Labels"),
)
NO_FINDING = "normal"


def parse_label_list(cell: str) -> list[str]:
    """A PadChest ``Labels`` / ``Localizations`` cell -> its strings (stripped, empty ones dropped).

    Raises:
        ValueError: longer than :data:`MAX_CELL_CHARS`, not a literal, or not a list of strings.
    """
    if not cell:
        return []
    if len(cell) > MAX_CELL_CHARS:
        raise ValueError(f"{len(cell)} characters (more than {MAX_CELL_CHARS})")
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(f"not a list literal: {cell[:60]!r} ({type(err).__name__})") from err
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not a list of strings: {cell[:60]!r}")
    return [v.strip() for v in value if v.strip()]


def import_padchest(
    source: str | os.PathLike, out_dir: str | os.PathLike, **options: Unpack[TableOptions]
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from the PadChest table and images (see the module docstring)."""
    job, table = ImportJob.with_table(FORMAT, TABLE, Path(source), out_dir, **options)
    problems: list[RowProblem] = []
    rows: list[dict] = []
    kept: set[str] = set()  # images
    file = table.file
    for row, image, rec in table.keyed_records("ImageID", problems, kept):
        try:
            names = parse_label_list(rec["Labels"])
            localizations = parse_label_list(rec.get("Localizations", ""))
        except ValueError as err:
            problems.append(RowProblem(file, row, "Labels", str(err), image))
            continue
        kept.add(image)
        path = job.images.relative(f"{rec.get('ImageDir', '')}/{image}") or job.images.by_name(image)
        labels = sorted({label_name(n) for n in names if n.lower() != NO_FINDING} - {""})
        rows.append({"id": Path(image).stem, "patient_id": rec["PatientID"], "image": job.images.cell(path) if path else "",
                     "findings": rec.get("Report", ""), "labels": ";".join(labels),
                     "report_language": "es", "study_id": rec.get("StudyID", ""), "view": rec.get("Projection", ""),
                     "label_method": rec.get("MethodLabel", ""), "localizations": ";".join(localizations)})  # fmt: skip
    return job.finish(rows, source_rows=len(table), problems=problems)
