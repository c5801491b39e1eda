"""Plain records shared by readers, datasets and writers.

A :class:`Study` is one row of a manifest after validation: paths are absolute,
boxes are parsed, labels are split. Readers produce them; datasets consume them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Box:
    """One lesion box in pixel coordinates of the stored image: ``(x0, y0, x1, y1)``."""

    label: str
    box: tuple[float, float, float, float]


@dataclass
class Study:
    """One study (image + report + annotations), as read from a manifest row."""

    id: str
    row: int  # row as the user sees it (CSV: header = row 1, first study = row 2; see manifest.py)
    patient_id: str | None = None
    image: Path | None = None  # absolute path, None = image missing
    sections: dict[str, str] = field(default_factory=dict)  # indication / findings / impression
    labels: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    split: str | None = None
    site: str | None = None
    view: str | None = None  # projection, normalised: "PA", "AP SUPINE", "LL", ...
    extra: dict[str, object] = field(default_factory=dict)  # columns the contract does not name

    def text(self, fields: Sequence[str], sep: str = " [SEP] ") -> str:
        """The named report sections joined by ``sep``, skipping empty ones."""
        parts = [self.sections.get(f, "").strip() for f in fields]
        return sep.join(p for p in parts if p)


@dataclass(frozen=True)
class RowProblem:
    """A bad manifest row: which file, which row, which field, and what is wrong."""

    file: str
    row: int
    field: str
    message: str
    study_id: str | None = None

    def __str__(self) -> str:
        who = f" (id {self.study_id})" if self.study_id else ""
        return f"{self.file}: row {self.row}{who}, field '{self.field}': {self.message}"


def listed_problems(problems: Sequence[RowProblem], most: int = 20) -> str:
    """The first ``most`` problems, each on an indented line of its own, then how many more there are."""
    more = len(problems) - most
    return "".join(f"\n  {p}" for p in problems[:most]) + (f"\n  ... and {more} more" if more > 0 else "")
