"""Manifest files -> raw cells: CSV (with a hostile-file guard), JSON Lines and Parquet readers.

Each reader returns a :class:`Table` of column lists plus the problems of lines it could not read
(an unclosed quote, too many cells, JSON nested too deeply), named by row as users count them."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from medmodal.data.jsonl import numbered_lines
from medmodal.data.manifest_contract import (
    CONTRACT_COLUMNS,
    CONTRACT_SET,
    EOF_SENTINEL,
    TOO_DEEP,
    ManifestError,
)
from medmodal.data.types import RowProblem

logger = logging.getLogger("medmodal.data.manifest")  # one documented logger for manifest reading


@dataclass
class Table:
    """Manifest cells by column, the user-visible row number of each row, file-level problems."""

    columns: dict[str, list[Any]]
    row_numbers: list[int]
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def row_count(self) -> int:
        return len(self.row_numbers) + len({p.row for p in self.problems})

    def rows(self) -> Iterator[tuple[int, Cells, dict[str, Any]]]:
        """``(row number, contract cells, extra cells)`` per row; absent contract columns read as ``""``."""
        absent = [""] * len(self.row_numbers)
        contract = [self.columns.get(name, absent) for name in CONTRACT_COLUMNS]
        extra_names = [name for name in self.columns if name not in CONTRACT_SET]
        extra_values = zip(*(self.columns[name] for name in extra_names)) if extra_names else repeat(())
        for row, values, extra in zip(self.row_numbers, zip(*contract), extra_values):
            yield row, Cells._make(values), dict(zip(extra_names, extra))


class Cells(NamedTuple):
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


def read_table(file: Path) -> Table:
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
    table.columns = canonical_column_names(table.columns)
    if "id" not in table.columns:
        raise ManifestError(
            f"{file}: no 'id' column (columns found: {', '.join(table.columns) or 'none'}); "
            f"the manifest columns are {', '.join(CONTRACT_COLUMNS)}"
        )
    return table


def _read_csv(file: Path) -> Table:
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
    return Table({str(c): frame[c].tolist() for c in frame.columns}, row_numbers)


def _read_csv_by_records(file: Path) -> Table:
    """Slower record-by-record CSV reading that names bad lines instead of failing on the first.

    A line with more cells than the header is a problem of its row (field
    ``(line)``). A quote that never closes swallows the rest of the file into one
    cell; a sentinel line after the file's end shows it (it lands inside that
    cell instead of being a record of its own): a problem of its row and column,
    and that row is not read.
    """
    with _csv_field_limit_lifted(), open(file, newline="", encoding="utf-8-sig") as lines:
        reader = csv.reader(chain(lines, [EOF_SENTINEL + "\n"]))
        header = [name.strip() for name in next(reader, [])]
        records: list[tuple[int, int, list[str]]] = []  # (row, first line, cells)
        line_before = reader.line_num
        for row, cells in enumerate(reader, start=2):  # header = row 1
            records.append((row, line_before + 1, cells))
            line_before = reader.line_num
    problems: list[RowProblem] = []
    line_before -= 1  # the sentinel's line
    if records and records[-1][2] == [EOF_SENTINEL]:
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
    return Table(columns, row_numbers, problems)


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


def _read_jsonl(file: Path) -> Table:
    return next(jsonl_tables(file, chunk_rows=sys.maxsize), Table({}, []))


def jsonl_tables(file: Path, chunk_rows: int) -> Iterator[Table]:
    """The objects of a JSON Lines file, ``chunk_rows`` lines (objects and bad lines) a table.

    Blank lines are skipped; a line that is not a JSON object is a problem (field ``(line)``) of its table.
    """
    records: list[dict[str, Any]] = []
    row_numbers: list[int] = []
    problems: list[RowProblem] = []
    for line_number, line in numbered_lines(file, encoding="utf-8-sig"):
        found = _json_object(line, str(file), line_number)
        if isinstance(found, RowProblem):
            problems.append(found)
        else:
            records.append(found)
            row_numbers.append(line_number)
        if len(records) + len(problems) >= chunk_rows:
            yield _records_table(records, row_numbers, problems)
            records, row_numbers, problems = [], [], []
    if records or problems:
        yield _records_table(records, row_numbers, problems)


def _json_object(line: str, file: str, line_number: int) -> dict[str, Any] | RowProblem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return RowProblem(file, line_number, "(line)", f"not valid JSON: {err.msg}")
    except RecursionError:
        return RowProblem(file, line_number, "(line)", TOO_DEEP)
    if not isinstance(record, dict):
        return RowProblem(file, line_number, "(line)", "not a JSON object")
    return record


def _records_table(records: list[dict], row_numbers: list[int], problems: list[RowProblem]) -> Table:
    names = list(dict.fromkeys(key for record in records for key in record))
    columns = {name: [plain(record.get(name)) for record in records] for name in names}
    return Table(columns, row_numbers, problems)


def _read_parquet(file: Path) -> Table:
    frame = pd.read_parquet(file)
    columns = {str(c): [plain(v) for v in frame[c].tolist()] for c in frame.columns}
    return Table(columns, list(range(1, len(frame) + 1)))


def plain(value: Any) -> Any:
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
        return [plain(v) if not isinstance(v, (int, float, np.number)) else v for v in value.tolist()]
    if isinstance(value, (list, tuple, dict)):
        return value
    return str(value).strip()


def canonical_column_names(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Contract columns matched case-insensitively and without surrounding spaces; others kept as is."""
    return {_canonical_name(name): values for name, values in columns.items()}


def _canonical_name(name: str) -> str:
    key = name.strip().lower()
    return key if key in CONTRACT_SET else name
