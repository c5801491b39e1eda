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

import gc
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medmodal.data.manifest_contract import MANIFEST_NAMES, ManifestError, view_matcher
from medmodal.data.manifest_report import log_outcome, problem_report
from medmodal.data.manifest_rows import RowValidator, check_images_and_boxes
from medmodal.data.manifest_tables import read_table
from medmodal.data.splits import (
    check_fractions,
    patient_key,
    patient_splits,
    split_counts,
)
from medmodal.data.types import SPLITS, RowProblem, Study

logger = logging.getLogger(__name__)


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
        table = read_table(file)
        validator = RowValidator(file, configured_labels=labels, allow_outside_paths=allow_outside_paths)
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
        problems += check_images_and_boxes(candidates, file)
    bad_rows = {p.row for p in problems}
    kept = [s for s in candidates if s.row not in bad_rows]
    problems.sort(key=lambda p: p.row)

    if problems and on_bad_row == "error":
        raise ManifestError(problem_report(file, problems, "bad row(s) (on_bad_row='error')"), problems)
    if not kept:
        raise ManifestError(problem_report(file, problems, "row(s) read, none usable"), problems)

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
    log_outcome(manifest, manifest.summary())
    return manifest


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
