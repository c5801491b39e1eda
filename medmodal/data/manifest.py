"""Read and validate a dataset manifest (CSV, JSON Lines or Parquet) into a :class:`Manifest`.

A dataset is a folder with a manifest, one row per study. Columns (only ``id`` is required):

=====================================  ================================================================
column                                 meaning
=====================================  ================================================================
``id``                                 unique study id
``patient_id``                         patient; toolkit-made splits never put one patient in two splits
``image``                              PNG / JPEG / DICOM path relative to the manifest's folder;
                                       it must stay inside that folder (see *Image paths*);
                                       empty = no image (text-only row)
``indication, findings, impression``   report sections, free text, any may be empty
``report``                             alternative to the three sections: one free-text report, split
                                       by its headers (:mod:`medmodal.data.reports`); used for a row
                                       whose section columns are all empty or absent
``labels``                             ``;``-separated names of the findings present (JSONL / Parquet:
                                       a list also works); empty = no finding
``boxes``                              JSON list ``[{"label": "nodule", "box": [x0, y0, x1, y1]}]`` in
                                       pixels of the stored image; empty = none
``split``                              ``train`` / ``val`` / ``test`` (case-insensitive); empty = the
                                       toolkit assigns one (:mod:`medmodal.data.splits`)
``site``                               acquisition site or scanner
``view``                               projection: ``PA``, ``AP``, ``AP SUPINE``, ``LL``, ``LATERAL``...
                                       (case, ``_`` and ``-`` ignored); ``views=["frontal"]`` keeps
                                       only frontal rows (see *Views*)
=====================================  ================================================================

Other columns are kept in ``Study.extra``. Column names are matched after
stripping spaces and ignoring case; a UTF-8 byte-order mark (Excel) is ignored.

Row numbers (``RowProblem.row``, ``Study.row``) are those a user sees:

* CSV: spreadsheet rows, **the header is row 1 and the first study is row 2**
  (a quoted cell spanning several lines is still one row);
* JSON Lines: line numbers, the first line is 1 (blank lines are counted, not read);
* Parquet: 1-based positions, the first study is row 1.

Image paths
-----------
The data folder is the manifest's folder. By default an image path must resolve,
after following symlinks, to a file inside it: ``../x.png``, absolute paths and
symlinks leading out are bad rows, found from the path alone before any file is
opened. ``allow_outside_paths=True`` (config ``data.allow_outside_paths``, CLI
``--allow-outside-paths``) accepts them, for a manifest you wrote yourself that
points at images stored elsewhere. Either way the path must name a regular,
non-empty file (not a folder, device or pipe), be at most 4096 bytes with no part
over 255 bytes, and hold no control characters.

Hostile cells
-------------
No problem message repeats a long cell: values are shortened (and report text is
never shown). ``id``, ``patient_id``, ``site``, ``split`` and each label must be
at most 256 characters without control characters (a line break there usually
means a quote was left open and swallowed the following lines); report text at
most 100,000 characters per cell (control characters other than whitespace are
replaced by spaces). A CSV quote left open to the end of the file is a bad row
naming the row and the column where it opens; the rows before it are read. A
CSV line with more cells than the header is a bad row (field ``(line)``). In
JSON Lines / Parquet, a list or object where text is expected is a bad row.

Views
-----
``read_manifest(views=[...])`` (config ``data.views``) keeps only the rows whose
``view`` is listed; the other rows are left out (not bad rows; counted in the
summary as ``left_out_by_view``), including rows without a view. Entries are view
names (``"PA"``) or the classes ``"frontal"`` (a view whose first word is PA, AP,
FRONTAL, POSTEROANTERIOR or ANTEROPOSTERIOR, e.g. ``AP SUPINE``, PadChest's
``AP_horizontal``) and ``"lateral"`` (first word LATERAL, LAT, LL, RL or L).

Bad rows are found before anything trains; each is a :class:`RowProblem`
naming the file, row, field and problem: missing ``id``; duplicate ``id``;
image path outside the data folder or not a file; unreadable, corrupt or
oversized image (with ``check_images``);
malformed ``boxes`` JSON or coordinates (not 4 numbers, negative, ``x1 <= x0``,
beyond the image when its size is known); a box label that is not among the
row's ``labels``; an unknown ``split``; a row with neither an image nor any text
(field ``image``). Not bad: an empty report (counted as missing text), a missing
image with text present (missing image), a label outside a configured label
set (ignored and counted), a fully empty CSV line (ignored).

Logging: logger ``medmodal.data.manifest``; one WARNING when rows are skipped
(counts by field and the first problems), one INFO line with the totals.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from medmodal.data.images import ImageReadError, check_image
from medmodal.data.reports import normalize_whitespace, split_report_sections
from medmodal.data.splits import (
    check_fractions,
    patient_key,
    patient_splits,
    patients_in_several_splits,
    split_counts,
)
from medmodal.data.types import SECTION_FIELDS, SPLITS, Box, RowProblem, Study

logger = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl", "manifest.parquet")
CONTRACT_COLUMNS = (
    "id",
    "patient_id",
    "image",
    *SECTION_FIELDS,
    "report",
    "labels",
    "boxes",
    "split",
    "site",
    "view",
)
_CONTRACT_SET = frozenset(CONTRACT_COLUMNS)
LABEL_SEPARATOR = ";"
MAX_LISTED_PROBLEMS = 50  # in a ManifestError message; all are in .problems
MAX_LOGGED_PROBLEMS = 5  # in the skip warning
BOX_TOLERANCE_PX = 1.0  # a box may overshoot the image border by this much (annotation-tool rounding)
VIEW_CLASSES = {
    "frontal": frozenset({"PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR"}),
    "lateral": frozenset({"LATERAL", "LAT", "LL", "RL", "L"}),
}  # a view is in a class when its first word is listed
IMAGE_CHECK_THREADS = 8  # image checks are mostly file I/O
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_NAME_CHARS = 256  # id, patient_id, site, split, one label
MAX_TEXT_CHARS = 100_000  # one report-text cell; real reports are a few thousand characters
MAX_BOXES_PER_ROW = 1000
MAX_SHOWN_CHARS = 80  # of a cell value repeated in a problem message
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NOT_SPACE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_TOO_DEEP = "JSON nested too deeply to read"
_EOF_SENTINEL = "medmodal-end-of-file-sentinel-5b1e0c"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message lists the bad rows (file, row, field)."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()):
        super().__init__(message)
        self.problems = list(problems)


@dataclass
class Manifest:
    """A validated manifest: the usable studies, the label set and the rows left out."""

    path: Path
    studies: list[Study]
    label_names: list[str]
    problems: list[RowProblem] = field(default_factory=list)
    rows_read: int = 0
    labels_outside_set: dict[str, int] = field(default_factory=dict)
    splits_assigned: int = 0  # studies whose split the toolkit chose
    left_out_by_view: int = 0  # usable rows whose view is not among the requested views

    def __len__(self) -> int:
        return len(self.studies)

    def split(self, name: str) -> list[Study]:
        """The studies of split ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLITS)}")
        return [s for s in self.studies if s.split == name]

    def summary(self) -> dict[str, Any]:
        """Counts describing what was read (JSON-serialisable).

        Keys: ``file``, ``rows_read``, ``rows_kept``, ``rows_skipped``,
        ``problems_by_field`` (a row with two problems counts under both fields),
        ``missing_image``, ``missing_text`` (kept rows), ``with_boxes``,
        ``label_counts`` (kept rows per label, in ``label_names`` order),
        ``labels_outside_set``, ``split_counts``, ``splits_assigned``,
        ``sites`` (kept rows per site, ``""`` = not given), ``patients``, ``left_out_by_view``.
        """
        skipped_rows = {p.row for p in self.problems}
        label_counts = Counter(label for s in self.studies for label in s.labels)
        patients = {patient_key(s) for s in self.studies}
        return {
            "file": str(self.path),
            "rows_read": self.rows_read,
            "rows_kept": len(self.studies),
            "rows_skipped": len(skipped_rows),
            "problems_by_field": dict(Counter(p.field for p in self.problems)),
            "missing_image": sum(1 for s in self.studies if s.image is None),
            "missing_text": sum(1 for s in self.studies if not any(s.sections.values())),
            "with_boxes": sum(1 for s in self.studies if s.boxes),
            "label_counts": {name: label_counts.get(name, 0) for name in self.label_names},
            "labels_outside_set": dict(self.labels_outside_set),
            "split_counts": split_counts(self.studies),
            "splits_assigned": self.splits_assigned,
            "sites": dict(Counter(s.site or "" for s in self.studies)),
            "patients": len(patients),
            "left_out_by_view": self.left_out_by_view,
        }


def read_manifest(
    path: str | os.PathLike,
    *,
    labels: list[str] | None = None,
    on_bad_row: Literal["skip", "error"] = "skip",
    check_images: bool = True,
    split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    split_seed: int = 0,
    allow_outside_paths: bool = False,
    views: Sequence[str] | None = None,
) -> Manifest:
    """Read, validate and split a manifest.

    Args:
        path: the manifest file, or its folder (then ``manifest.csv``,
            ``manifest.jsonl`` or ``manifest.parquet`` inside it).
        labels: the label set, in output order; ``None`` = the sorted union of
            the labels of the kept rows. Labels outside a given set are ignored
            (and counted in the summary), as are their boxes.
        on_bad_row: ``"skip"`` drops bad rows and logs one warning;
            ``"error"`` raises :class:`ManifestError` listing every problem.
        check_images: decode-check every image (:func:`~medmodal.data.images.check_image`,
            threaded) and check boxes against the image size. Whether the image
            file exists is checked either way.
        split_fractions, split_seed: for studies without a ``split``
            (:func:`~medmodal.data.splits.assign_patient_splits`).
        allow_outside_paths: accept image paths that resolve outside the
            manifest's folder (default: such rows are bad, field ``image``).
        views: keep only rows with these views (names or ``"frontal"`` / ``"lateral"``);
            None keeps every row.

    Raises:
        ManifestError: unreadable file, no ``id`` column, bad rows with
            ``on_bad_row="error"``, or no usable row at all.

    The module docstring describes the columns, the row numbering and what makes a row bad.
    """
    if on_bad_row not in ("skip", "error"):
        raise ValueError(f"on_bad_row must be 'skip' or 'error', got {on_bad_row!r}")
    check_fractions(split_fractions)
    if labels is not None and len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    file = find_manifest_file(path)
    with _gc_paused():  # 100k rows create ~1M objects; generational GC passes would double the time
        table = _read_table(file)
        validator = _RowValidator(file, configured_labels=labels, allow_outside_paths=allow_outside_paths)
        candidates = [s for s in (validator.validate(*row) for row in table.rows()) if s is not None]
    problems = table.problems + validator.problems
    if views is not None:
        wanted = view_matcher(views)
        read = len(candidates)
        candidates = [s for s in candidates if wanted(s.view)]
        left_out_by_view = read - len(candidates)
    else:
        left_out_by_view = 0
    if check_images:
        problems += _check_images_and_boxes(candidates, file)
    bad_rows = {p.row for p in problems}
    kept = [s for s in candidates if s.row not in bad_rows]
    problems.sort(key=lambda p: p.row)

    if problems and on_bad_row == "error":
        raise ManifestError(_problem_report(file, problems, "bad row(s) (on_bad_row='error')"), problems)
    if not kept:
        raise ManifestError(_problem_report(file, problems, "row(s) read, none usable"), problems)

    label_names = list(labels) if labels is not None else sorted({lb for s in kept for lb in s.labels})
    with_split = sum(1 for s in kept if s.split)
    for study, split in zip(kept, patient_splits(kept, split_fractions, split_seed)):
        study.split = split  # the studies are this function's own: set in place, no copies
    manifest = Manifest(
        path=file,
        studies=kept,
        label_names=label_names,
        problems=problems,
        rows_read=table.row_count,
        labels_outside_set=dict(validator.labels_outside_set),
        splits_assigned=len(kept) - with_split,
        left_out_by_view=left_out_by_view,
    )
    _log_outcome(manifest, manifest.summary())
    return manifest


def normalize_view(view: str) -> str:
    """``"ap_supine "`` -> ``"AP SUPINE"``: upper case, ``_`` / ``-`` as spaces, single spaces."""
    return " ".join(view.replace("_", " ").replace("-", " ").upper().split())


def view_matcher(views: Sequence[str]):
    """A predicate ``view -> bool`` for the requested views (names or ``frontal`` / ``lateral``)."""
    names = {normalize_view(v) for v in views if v.strip().lower() not in VIEW_CLASSES}
    first_words = set().union(
        *(VIEW_CLASSES[v.strip().lower()] for v in views if v.strip().lower() in VIEW_CLASSES)
    )

    def wanted(view: str | None) -> bool:
        return bool(view) and (view in names or view.split()[0] in first_words)

    return wanted


def find_manifest_file(path: str | os.PathLike) -> Path:
    """The manifest file for ``path`` (a manifest file, or a folder holding exactly one)."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
        if not found:
            raise ManifestError(
                f"{path}: no manifest in this folder (looked for {', '.join(MANIFEST_NAMES)})"
            )
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise ManifestError(f"{path}: several manifests ({names}); pass the file to use")
        return found[0]
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    return path


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ------------------------------------------------------------------------ tables
@dataclass
class _Table:
    """Manifest cells by column, the user-visible row number of each row, file-level problems."""

    columns: dict[str, list[Any]]
    row_numbers: list[int]
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return len(self.row_numbers) + len({p.row for p in self.problems})

    def rows(self) -> Iterator[tuple[int, _Cells, dict[str, Any]]]:
        """``(row number, contract cells, extra cells)`` per row; absent contract columns read as ``""``."""
        absent = [""] * len(self.row_numbers)
        contract = [self.columns.get(name, absent) for name in CONTRACT_COLUMNS]
        extra_names = [name for name in self.columns if name not in _CONTRACT_SET]
        extra_values = zip(*(self.columns[name] for name in extra_names)) if extra_names else repeat(())
        for row, values, extra in zip(self.row_numbers, zip(*contract), extra_values):
            yield row, _Cells._make(values), dict(zip(extra_names, extra))


class _Cells(NamedTuple):
    """One row's contract cells (str, or list for labels / boxes from JSONL and Parquet)."""

    id: Any
    patient_id: Any
    image: Any
    indication: Any
    findings: Any
    impression: Any
    report: Any
    labels: Any
    boxes: Any
    split: Any
    site: Any
    view: Any


def _read_table(file: Path) -> _Table:
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            table = _read_csv(file)
        elif suffix in (".jsonl", ".ndjson"):
            table = _read_jsonl(file)
        elif suffix in (".parquet", ".pq"):
            table = _read_parquet(file)
        else:
            raise ManifestError(
                f"{file}: unsupported manifest type {suffix!r} (use .csv, .jsonl or .parquet)"
            )
    except ManifestError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ManifestError(f"{file}: cannot read manifest: {' '.join(str(err).split())}") from err
    table.columns = _canonical_column_names(table.columns)
    if "id" not in table.columns:
        raise ManifestError(
            f"{file}: no 'id' column (columns found: {', '.join(table.columns) or 'none'}); "
            f"the manifest columns are {', '.join(CONTRACT_COLUMNS)}"
        )
    return table


def _read_csv(file: Path) -> _Table:
    try:
        frame = pd.read_csv(
            file,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            encoding="utf-8-sig",
            skip_blank_lines=False,
        )
    except pd.errors.ParserError:  # a quote left open, or a line with too many cells
        return _read_csv_by_records(file)
    for name in frame.columns:  # vectorised strip; cells stay str
        frame[name] = frame[name].str.strip()
    nonempty = (frame != "").any(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), bool)
    frame = frame[nonempty]
    row_numbers = (np.flatnonzero(nonempty) + 2).tolist()  # header = row 1
    return _Table({str(c): frame[c].tolist() for c in frame.columns}, row_numbers)


def _read_csv_by_records(file: Path) -> _Table:
    """Slower record-by-record CSV reading that names bad lines instead of failing on the first.

    A line with more cells than the header is a problem of its row (field
    ``(line)``). A quote that never closes swallows the rest of the file into one
    cell; a sentinel line after the file's end shows it (it lands inside that
    cell instead of being a record of its own): a problem of its row and column,
    and that row is not read.
    """
    with _csv_field_limit_lifted(), open(file, newline="", encoding="utf-8-sig") as lines:
        reader = csv.reader(chain(lines, [_EOF_SENTINEL + "\n"]))
        header = [name.strip() for name in next(reader, [])]
        records: list[tuple[int, int, list[str]]] = []  # (row, first line, cells)
        line_before = reader.line_num
        for row, cells in enumerate(reader, start=2):  # header = row 1
            records.append((row, line_before + 1, cells))
            line_before = reader.line_num
    problems: list[RowProblem] = []
    line_before -= 1  # the sentinel's line
    if records and records[-1][2] == [_EOF_SENTINEL]:
        records.pop()
    elif records:  # the sentinel is inside the last cell: its quote never closed
        row, first_line, cells = records.pop()
        column = header[len(cells) - 1] if 0 < len(cells) <= len(header) else "(line)"
        problems.append(RowProblem(str(file), row, _canonical_name(column),
            f"a quote opened in this cell (line {first_line}) is never closed, so it runs to the end "
            f"of the file (line {line_before}); the lines from here on are not read"))  # fmt: skip
    columns: dict[str, list[str]] = {name: [] for name in _unique_names(header)}
    row_numbers: list[int] = []
    for row, _, cells in records:
        if len(cells) > len(header):
            problems.append(RowProblem(str(file), row, "(line)",
                                       f"{len(cells)} cells, but the header has {len(header)} columns"))  # fmt: skip
            continue
        values = [c.strip() for c in cells] + [""] * (len(header) - len(cells))
        if any(values):
            for values_of_column, value in zip(columns.values(), values):
                values_of_column.append(value)
            row_numbers.append(row)
    return _Table(columns, row_numbers, problems)


@contextmanager
def _csv_field_limit_lifted() -> Iterator[None]:
    """Cells of any length while reading (the csv module stops at 128 kB by default)."""
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _unique_names(names: list[str]) -> list[str]:
    """Header names with repeats suffixed ``.1``, ``.2`` as pandas does."""
    seen: Counter[str] = Counter()
    unique = []
    for name in names:
        unique.append(f"{name}.{seen[name]}" if seen[name] else name)
        seen[name] += 1
    return unique


def _read_jsonl(file: Path) -> _Table:
    records: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    problems: list[RowProblem] = []
    with open(file, encoding="utf-8-sig") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(RowProblem(str(file), line_number, "(line)", f"not valid JSON: {err.msg}"))
                continue
            except RecursionError:
                problems.append(RowProblem(str(file), line_number, "(line)", _TOO_DEEP))
                continue
            if not isinstance(record, dict):
                problems.append(RowProblem(str(file), line_number, "(line)", "not a JSON object"))
                continue
            records.append(record)
            row_numbers.append(line_number)
    names = list(dict.fromkeys(key for record in records for key in record))
    columns = {name: [_plain(record.get(name)) for record in records] for name in names}
    return _Table(columns, row_numbers, problems)


def _read_parquet(file: Path) -> _Table:
    frame = pd.read_parquet(file)
    columns = {str(c): [_plain(v) for v in frame[c].tolist()] for c in frame.columns}
    return _Table(columns, list(range(1, len(frame) + 1)))


def _plain(value: Any) -> Any:
    """A JSONL / Parquet cell as str, or list/dict (labels, boxes); missing -> ``""``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.ndarray):
        return [_plain(v) if not isinstance(v, (int, float, np.number)) else v for v in value.tolist()]
    if isinstance(value, (list, tuple, dict)):
        return value
    return str(value).strip()


def _canonical_column_names(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Contract columns matched case-insensitively and without surrounding spaces; others kept as is."""
    return {_canonical_name(name): values for name, values in columns.items()}


def _canonical_name(name: str) -> str:
    key = name.strip().lower()
    return key if key in _CONTRACT_SET else name


# --------------------------------------------------------------------- row checks
class _RowValidator:
    """Turns one row's cells into a :class:`Study`, recording the row's problems."""

    def __init__(self, file: Path, configured_labels: list[str] | None, allow_outside_paths: bool = False):
        self.file = file
        self.base_dir = file.parent.resolve()
        self.allow_outside_paths = allow_outside_paths
        self.label_set = set(configured_labels) if configured_labels is not None else None
        self.first_row_of_id: dict[str, int] = {}
        self.problems: list[RowProblem] = []
        self.labels_outside_set: Counter[str] = Counter()

    def validate(self, row: int, cells: _Cells, extra: dict[str, Any]) -> Study | None:
        """The row's study, or None without an id.

        A study is returned even when the row has problems, so that its image is
        still checked and every problem of the row is reported at once.
        """
        study_id = _name_cell("id", cells.id, _ProblemRecorder(self.problems, str(self.file), row, None))
        problem = _ProblemRecorder(self.problems, str(self.file), row, study_id or None)
        if study_id is None:
            return None
        if not study_id:
            problem("id", "missing id")
            return None
        first_row = self.first_row_of_id.setdefault(study_id, row)
        if first_row != row:
            problem("id", f"duplicate id {_shown(study_id)} (first at row {first_row})")

        image_cell = _name_cell("image", cells.image, problem, max_chars=MAX_PATH_BYTES)
        image = self._image_path(image_cell, problem) if image_cell else None
        problems_before_text = len(self.problems)
        sections = _sections(cells, problem)
        text_refused = len(self.problems) > problems_before_text
        row_labels = _labels(cells.labels, problem)
        boxes = _boxes(cells.boxes, row_labels, problem)
        split = _split(cells.split, problem)
        patient_id = _name_cell("patient_id", cells.patient_id, problem)
        site = _name_cell("site", cells.site, problem)
        view = _name_cell("view", cells.view, problem)
        if image_cell == "" and not any(sections.values()) and not text_refused:
            problem("image", "row has neither an image nor any report text")
        if self.label_set is not None:
            row_labels, boxes = self._within_label_set(row_labels, boxes)
        return Study(
            id=study_id,
            row=row,
            patient_id=patient_id or None,
            image=image,
            sections=sections,
            labels=row_labels,
            boxes=boxes,
            split=split,
            site=site or None,
            view=(normalize_view(view) or None) if view else None,
            extra=extra,
        )

    def _image_path(self, cell: str, problem: _ProblemRecorder) -> Path | None:
        """The resolved image path, or None (and a problem) if it is unsafe or not a regular file.

        Only ``lstat`` / ``stat`` touch the file system here: nothing is opened
        before the path is known to stay inside the data folder.
        """
        text_problem = _path_text_problem(cell)
        if text_problem:
            problem("image", text_problem)
            return None
        try:
            path = Path(os.path.realpath(self.base_dir / cell))  # symlinks followed
        except (OSError, ValueError) as err:
            problem("image", f"image path {_shown(cell)} cannot be resolved ({type(err).__name__})")
            return None
        if not self.allow_outside_paths and not path.is_relative_to(self.base_dir):
            problem("image", f"image path {_shown(cell)} leads outside the data folder {self.base_dir} "
                             "(allow with data.allow_outside_paths / --allow-outside-paths)")  # fmt: skip
            return None
        try:
            info = path.stat()
        except FileNotFoundError:
            problem("image", f"image file not found: {_shown(cell)} (looked at {path})")
            return None
        except (OSError, ValueError) as err:
            reason = os.strerror(err.errno) if getattr(err, "errno", None) else type(err).__name__
            problem("image", f"image path {_shown(cell)} cannot be used: {reason}")
            return None
        kind_problem = _file_kind_problem(info)
        if kind_problem:
            problem("image", f"image path {_shown(cell)} {kind_problem}")
            return None
        return path

    def _within_label_set(self, labels: list[str], boxes: list[Box]) -> tuple[list[str], list[Box]]:
        outside = [lb for lb in labels if lb not in self.label_set]
        self.labels_outside_set.update(outside)
        if not outside:
            return labels, boxes
        return [lb for lb in labels if lb in self.label_set], [b for b in boxes if b.label in self.label_set]


class _ProblemRecorder:
    """``problem(field, message)`` appends a :class:`RowProblem` for one row."""

    __slots__ = ("file", "row", "sink", "study_id")

    def __init__(self, sink: list[RowProblem], file: str, row: int, study_id: str | None):
        self.sink, self.file, self.row, self.study_id = sink, file, row, study_id

    def __call__(self, field_name: str, message: str) -> None:
        self.sink.append(RowProblem(self.file, self.row, field_name, message, self.study_id))


def _text(cell: Any) -> str:
    """A cell as stripped text (table readers already strip str cells)."""
    if type(cell) is str:
        return cell
    return "" if cell is None else str(cell).strip()


def _shown(value: str) -> str:
    """``value`` quoted for a problem message, shortened to :data:`MAX_SHOWN_CHARS` characters."""
    if len(value) <= MAX_SHOWN_CHARS:
        return repr(value)
    return f"{value[:MAX_SHOWN_CHARS]!r}... ({len(value):,} characters)"


def _clipped(text: str) -> str:
    """``text`` as is, or its start and length when longer than :data:`MAX_SHOWN_CHARS`."""
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}... ({len(text):,} characters)"


def _kind(cell: Any) -> str:
    return "a JSON object" if isinstance(cell, dict) else "a JSON list"


def _name_cell(
    field_name: str, cell: Any, problem: _ProblemRecorder, max_chars: int = MAX_NAME_CHARS
) -> str | None:
    """A short single-line text cell (id, path, site, ...), or None (and a problem) if it is not one."""
    if isinstance(cell, (list, tuple, dict)):
        problem(field_name, f"must be text or a number, got {_kind(cell)}")
        return None
    value = _text(cell)
    if _CONTROL.search(value):
        problem(field_name, "contains a line break or other control character "
                            "(a line break here usually means a quote left open earlier)")  # fmt: skip
        return None
    if len(value) > max_chars:
        problem(field_name, f"{len(value):,} characters, more than the limit of {max_chars:,}")
        return None
    return value


def _path_text_problem(cell: str) -> str | None:
    """Why the path text cannot name a file (too long overall or in one part), or None."""
    try:
        encoded = os.fsencode(cell)
    except UnicodeError:
        return "image path cannot be encoded for this file system"
    if len(encoded) > MAX_PATH_BYTES:
        return f"image path is {len(encoded):,} bytes long, more than the limit of {MAX_PATH_BYTES:,}"
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > MAX_NAME_BYTES:
        return f"a part of the image path is {longest:,} bytes long, more than the limit of {MAX_NAME_BYTES}"
    return None


def _file_kind_problem(info: os.stat_result) -> str | None:
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file (a device, pipe or socket)"
    if info.st_size == 0:
        return "is an empty file (0 bytes)"
    return None


def _text_cell(field_name: str, cell: Any, problem: _ProblemRecorder) -> str:
    """A report-text cell: control characters other than whitespace become spaces; "" (and a problem) if unusable."""
    if isinstance(cell, (list, tuple, dict)):
        problem(field_name, f"must be text, got {_kind(cell)}")
        return ""
    value = _text(cell)
    if len(value) > MAX_TEXT_CHARS:
        problem(field_name, f"{len(value):,} characters, more than the limit of {MAX_TEXT_CHARS:,} "
                            "(a quote left open can swallow the rest of a CSV file)")  # fmt: skip
        return ""
    return _CONTROL_NOT_SPACE.sub(" ", value)


def _sections(cells: _Cells, problem: _ProblemRecorder) -> dict[str, str]:
    sections = {
        "indication": normalize_whitespace(_text_cell("indication", cells.indication, problem)),
        "findings": normalize_whitespace(_text_cell("findings", cells.findings, problem)),
        "impression": normalize_whitespace(_text_cell("impression", cells.impression, problem)),
    }
    if cells.report and not any(sections.values()):
        sections = split_report_sections(_text_cell("report", cells.report, problem))
    return sections


def _labels(cell: Any, problem: _ProblemRecorder) -> list[str]:
    if not cell:
        return []
    if isinstance(cell, dict):
        problem("labels", "must be ';'-separated names or a JSON list of names, got a JSON object")
        return []
    if isinstance(cell, (list, tuple)):
        if any(isinstance(v, (list, tuple, dict)) for v in cell):
            problem("labels", "a JSON list of labels must hold names, not lists or objects")
            return []
        names = [_text(v) for v in cell]
    else:
        names = [part.strip() for part in _text(cell).split(LABEL_SEPARATOR)]
    for name in names:
        if _CONTROL.search(name) or len(name) > MAX_NAME_CHARS:
            problem("labels", f"label {_shown(name)} is longer than {MAX_NAME_CHARS} characters "
                              "or holds a control character")  # fmt: skip
            return []
    return list(dict.fromkeys(n for n in names if n))


def _split(cell: Any, problem: _ProblemRecorder) -> str | None:
    if not cell:
        return None
    if isinstance(cell, (list, tuple, dict)):
        problem("split", f"must be text, got {_kind(cell)}")
        return None
    value = _text(cell).lower()
    if not value:
        return None
    if value not in SPLITS:
        problem("split", f"unknown split {_shown(_text(cell))}; use {', '.join(SPLITS)} or leave empty")
        return None
    return value


def _boxes(cell: Any, row_labels: list[str], problem: _ProblemRecorder) -> list[Box]:
    """Parse and check the ``boxes`` cell; every problem is reported, valid boxes returned."""
    if not cell:
        return []
    if isinstance(cell, str):
        try:
            entries = json.loads(cell)
        except json.JSONDecodeError as err:
            problem("boxes", f"not valid JSON ({err.msg} at character {err.pos})")
            return []
        except RecursionError:
            problem("boxes", _TOO_DEEP)
            return []
    else:
        entries = cell
    if entries in (None, ""):
        return []
    if not isinstance(entries, list):
        problem("boxes", 'must be a JSON list like [{"label": "nodule", "box": [x0, y0, x1, y1]}]')
        return []
    if len(entries) > MAX_BOXES_PER_ROW:
        problem("boxes", f"{len(entries):,} boxes, more than the limit of {MAX_BOXES_PER_ROW:,} per row")
        return []
    boxes = []
    for index, entry in enumerate(entries):
        message = _box_problem(entry, row_labels)
        if message:
            problem("boxes", f"box {index}: {message}")
        else:
            boxes.append(Box(label=str(entry["label"]).strip(), box=tuple(float(v) for v in entry["box"])))
    return boxes


def _box_problem(entry: Any, row_labels: list[str]) -> str | None:
    if not isinstance(entry, dict) or "label" not in entry or "box" not in entry:
        return 'each box must be an object {"label": ..., "box": [x0, y0, x1, y1]}'
    label = str(entry["label"]).strip()
    coords = entry["box"]
    if isinstance(coords, np.ndarray):
        coords = coords.tolist()
    if (
        not isinstance(coords, (list, tuple))
        or len(coords) != 4
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in coords
        )
    ):
        return f"box must be 4 finite numbers [x0, y0, x1, y1], got {_clipped(repr(coords))}"
    x0, y0, x1, y1 = coords
    if min(coords) < 0:
        return f"negative coordinate in {list(coords)}"
    if x1 <= x0 or y1 <= y0:
        return f"needs x1 > x0 and y1 > y0, got {list(coords)}"
    if label not in row_labels:
        return f"label {_shown(label)} is not among the row's labels {_clipped(str(row_labels))}"
    return None


# ------------------------------------------------------------------- image checks
def _check_images_and_boxes(studies: list[Study], file: Path) -> list[RowProblem]:
    """Decode-check each distinct image (threaded) and check boxes against its size."""
    paths = sorted({s.image for s in studies if s.image is not None})
    if not paths:
        return []
    logger.info("checking %d images of %s", len(paths), file)
    with ThreadPoolExecutor(max_workers=min(IMAGE_CHECK_THREADS, len(paths))) as pool:
        outcomes = dict(zip(paths, pool.map(_size_or_error, paths)))
    return [p for s in studies if s.image is not None for p in study_image_problems(s, outcomes[s.image], file)]


def study_image_problems(
    study: Study, outcome: tuple[int, int] | ImageReadError, file: Path
) -> list[RowProblem]:
    """The problems of one study given its image check (``(height, width)`` or the read error):
    the unreadable image, or each box that extends beyond the image."""
    if isinstance(outcome, ImageReadError):
        return [RowProblem(str(file), study.row, "image", outcome.reason, study.id)]
    height, width = outcome
    return [
        RowProblem(
            str(file), study.row, "boxes",
            f"box {index} {list(box.box)} extends beyond the image ({width} x {height} pixels)", study.id,
        )
        for index, box in enumerate(study.boxes)
        if box.box[2] > width + BOX_TOLERANCE_PX or box.box[3] > height + BOX_TOLERANCE_PX
    ]  # fmt: skip


def _size_or_error(path: Path) -> tuple[int, int] | ImageReadError:
    try:
        return check_image(path)
    except ImageReadError as err:
        return err


# ---------------------------------------------------------------------- reporting
def _problem_report(file: Path, problems: list[RowProblem], what: str) -> str:
    rows = len({p.row for p in problems})
    lines = [f"{file}: {rows} {what}:"]
    lines += [f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(
            f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more problems (ManifestError.problems)"
        )
    return "\n".join(lines)


def _log_outcome(manifest: Manifest, summary: dict[str, Any]) -> None:
    if manifest.problems:
        by_field = ", ".join(f"{k}: {v}" for k, v in sorted(summary["problems_by_field"].items()))
        first = "\n".join(f"  {p}" for p in manifest.problems[:MAX_LOGGED_PROBLEMS])
        more = len(manifest.problems) - MAX_LOGGED_PROBLEMS
        logger.warning(
            "%s: skipped %d of %d rows (problems by field: %s); first problems:\n%s%s",
            manifest.path, summary["rows_skipped"], summary["rows_read"], by_field, first,
            f"\n  ... and {more} more (Manifest.problems)" if more > 0 else "",
        )  # fmt: skip
    if manifest.left_out_by_view:
        logger.info("%s: left out %d row(s) whose view is not among the requested views",
                    manifest.path, manifest.left_out_by_view)  # fmt: skip
    leaking = patients_in_several_splits(manifest.studies)
    if leaking:
        example = next(iter(leaking.items()))
        logger.warning(
            "%s: the manifest's split column puts %d patient(s) in more than one split (e.g. %s in %s)",
            manifest.path, len(leaking), example[0], sorted(example[1]),
        )  # fmt: skip
    logger.info(
        "%s: %d studies (%s), %d without image, %d without text, %d labels",
        manifest.path, summary["rows_kept"],
        ", ".join(f"{k} {v}" for k, v in summary["split_counts"].items()),
        summary["missing_image"], summary["missing_text"], len(manifest.label_names),
    )  # fmt: skip
