"""Manifest row validation: one row's cells -> a :class:`~medmodal.data.types.Study` or named problems,
and the image / box checks against each decoded image size (threaded)."""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np

from medmodal.data.images import ImageReadError, check_image
from medmodal.data.manifest_contract import (
    BOX_TOLERANCE_PX,
    CONTROL_CHARS,
    CONTROL_NOT_SPACE,
    IMAGE_CHECK_THREADS,
    LABEL_SEPARATOR,
    MAX_BOXES_PER_ROW,
    MAX_NAME_BYTES,
    MAX_NAME_CHARS,
    MAX_PATH_BYTES,
    MAX_SHOWN_CHARS,
    MAX_TEXT_CHARS,
    TOO_DEEP,
    normalize_view,
)
from medmodal.data.manifest_tables import Cells
from medmodal.data.reports import normalize_whitespace, split_report_sections
from medmodal.data.types import SPLITS, Box, RowProblem, Study

logger = logging.getLogger("medmodal.data.manifest")  # one documented logger for manifest reading


class RowValidator:
    """Turns one row's cells into a :class:`Study`, recording the row's problems."""

    def __init__(self, file: Path, configured_labels: list[str] | None, allow_outside_paths: bool = False):
        self.file = file
        self.base_dir = file.parent.resolve()
        self.allow_outside_paths = allow_outside_paths
        self.label_set = set(configured_labels) if configured_labels is not None else None
        self.first_row_of_id: dict[str, int] = {}
        self.problems: list[RowProblem] = []
        self.labels_outside_set: Counter[str] = Counter()

    def validate(self, row: int, cells: Cells, extra: dict[str, Any]) -> Study | None:
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
            row_labels, boxes = self._within_label_set(self.label_set, row_labels, boxes)
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
            errno = getattr(err, "errno", None)  # ValueError has none
            reason = os.strerror(errno) if errno else type(err).__name__
            problem("image", f"image path {_shown(cell)} cannot be used: {reason}")
            return None
        kind_problem = _file_kind_problem(info)
        if kind_problem:
            problem("image", f"image path {_shown(cell)} {kind_problem}")
            return None
        return path

    def _within_label_set(
        self, label_set: set[str], labels: list[str], boxes: list[Box]
    ) -> tuple[list[str], list[Box]]:
        outside = [lb for lb in labels if lb not in label_set]
        self.labels_outside_set.update(outside)
        if not outside:
            return labels, boxes
        return [lb for lb in labels if lb in label_set], [b for b in boxes if b.label in label_set]


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
    if CONTROL_CHARS.search(value):
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
    return CONTROL_NOT_SPACE.sub(" ", value)


def _sections(cells: Cells, problem: _ProblemRecorder) -> dict[str, str]:
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
        if CONTROL_CHARS.search(name) or len(name) > MAX_NAME_CHARS:
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
            problem("boxes", TOO_DEEP)
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
            # _box_problem checked: exactly 4 finite numbers
            coords = cast("tuple[float, float, float, float]", tuple(float(v) for v in entry["box"]))
            boxes.append(Box(label=str(entry["label"]).strip(), box=coords))
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
def check_images_and_boxes(studies: list[Study], file: Path) -> list[RowProblem]:
    """Decode-check each distinct image (threaded) and check boxes against its size."""
    paths = sorted({s.image for s in studies if s.image is not None})
    if not paths:
        return []
    logger.info("checking %d images of %s", len(paths), file)
    with ThreadPoolExecutor(max_workers=min(IMAGE_CHECK_THREADS, len(paths))) as pool:
        outcomes = dict(zip(paths, pool.map(size_or_error, paths)))
    return [
        p for s in studies if s.image is not None for p in study_image_problems(s, outcomes[s.image], file)
    ]


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


def size_or_error(path: Path) -> tuple[int, int] | ImageReadError:
    try:
        return check_image(path)
    except ImageReadError as err:
        return err
