"""An importer's source tables: found by name, read as text cells numbered as spreadsheet rows.

A source table is untrusted input (see :mod:`medmodal.data.importers.common`). Bad rows become
:class:`~medmodal.data.types.RowProblem` records naming the file, the row (spreadsheet
numbering: header = row 1, first data row = row 2) and the field.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medmodal.data.types import RowProblem, listed_problems
from medmodal.errors import DataError, InputNotFoundError

MAX_LISTED_PROBLEMS = 20
MAX_CELL_CHARS = 100_000  # a longer cell in a label / list column is refused, not parsed


class ImportFormatError(DataError, ValueError):
    """A source that cannot be imported; ``problems`` names each bad row (file, row, field)."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()):
        self.problems = list(problems)
        super().__init__(message + listed_problems(self.problems, MAX_LISTED_PROBLEMS))


def read_table(path: Path, required: Sequence[str], *, nrows: int | None = None) -> pd.DataFrame:
    """A CSV (also ``.gz`` / single-file ``.zip``) as str cells, column names stripped, plus ``_row``.

    ``_row`` is the spreadsheet row of each line (header = 1). Raises
    :class:`ImportFormatError` naming the file and the missing columns.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, nrows=nrows,
                            encoding="utf-8-sig", compression="infer")  # fmt: skip
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise ImportFormatError(f"{path}: cannot read the table: {' '.join(str(err).split())}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ImportFormatError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} (found: {', '.join(frame.columns)})"
        )
    for name in frame.columns:
        frame[name] = frame[name].str.strip()
    frame["_row"] = range(2, len(frame) + 2)
    return frame


def records(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """The rows of a :func:`read_table` frame as dicts (several times faster than ``DataFrame.to_dict``)."""
    names = list(frame.columns)
    for values in zip(*(frame[name].tolist() for name in names)):
        yield dict(zip(names, values))


def find_table(source: Path, patterns: Sequence[str], what: str) -> Path:
    """``source`` itself if it is a file, else the first file in it (not recursive) matching a glob of ``patterns``."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise InputNotFoundError(f"{source}: not found")
    found = first_match(source, patterns)
    if found is None:
        raise InputNotFoundError(f"{source}: no {what} here (looked for {', '.join(patterns)})")
    return found


def first_match(folder: Path, patterns: Sequence[str]) -> Path | None:
    """The last (sorted) file in ``folder`` matching the first glob of ``patterns`` that matches any, else None."""
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1]
    return None


@dataclass(frozen=True)
class TableFormat:
    """A format's source table: the names it goes by (globs, in order), what it is, its required columns."""

    patterns: tuple[str, ...]
    what: str  # named when no file matches ("SIIM train-rle table")
    required: tuple[str, ...]


@dataclass(frozen=True)
class SourceTable:
    """A table read with :func:`read_table`; ``file`` names it in :class:`RowProblem` records."""

    path: Path
    frame: pd.DataFrame

    @classmethod
    def read(cls, path: Path, required: Sequence[str]) -> SourceTable:
        return cls(path, read_table(path, required))

    @property
    def file(self) -> str:
        return str(self.path)

    def __len__(self) -> int:
        return len(self.frame)

    def records(self) -> Iterator[dict[str, Any]]:
        """The rows as dicts (:func:`records`)."""
        return records(self.frame)

    def keyed_records(
        self, key: str, problems: list[RowProblem], kept: Container[str] = ()
    ) -> Iterator[tuple[int, str, dict[str, Any]]]:
        """``(row, rec[key], rec)`` of each row whose ``key`` cell is filled and not in ``kept`` (the keys
        of the rows the caller has kept so far); an empty cell or a kept key again is a problem."""
        last: dict[str, int] = {}  # the row last yielded for a key: the kept one once the key is kept
        for rec in self.records():
            row, value = rec["_row"], rec[key]
            if not value:
                problems.append(RowProblem(self.file, row, key, "empty"))
            elif value in kept:
                problems.append(
                    RowProblem(self.file, row, key, f"duplicate (first at row {last[value]})", value)
                )
            else:
                last[value] = row
                yield row, value, rec


def number(
    cell: str, file: str, row: int, field_name: str, problems: list[RowProblem], study: str = ""
) -> float | None:
    """``cell`` as a finite float, or None with a problem recorded."""
    try:
        value = float(cell)
    except ValueError:
        problems.append(RowProblem(file, row, field_name, f"not a number: {cell[:40]!r}", study or None))
        return None
    if not math.isfinite(value):
        problems.append(RowProblem(file, row, field_name, f"not a finite number: {cell!r}", study or None))
        return None
    return value


def numbers(
    rec: dict[str, Any],
    columns: Sequence[str],
    file: str,
    problems: list[RowProblem],
    study: str = "",
    fields: Sequence[str] | None = None,
) -> list[float] | None:
    """The ``columns`` cells of a :func:`records` row as finite floats, or None when any is not
    (each bad cell recorded by :func:`number` under its name in ``fields``, default the column's)."""
    values = [
        number(rec[c], file, rec["_row"], f, problems, study) for c, f in zip(columns, fields or columns)
    ]
    found = [v for v in values if v is not None]
    return found if len(found) == len(values) else None
