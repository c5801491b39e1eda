"""Read a manifest in chunks: rows validated and bad rows named while the file streams.

:func:`read_manifest` reads the whole table, then validates it; a 1M-row manifest then
holds every cell and every :class:`Study` at once. :func:`stream_manifest` reads
``chunk_rows`` rows at a time (pandas ``read_csv(chunksize=...)``, JSON Lines line by
line, pyarrow ``ParquetFile.iter_batches``), validates them with the same row rules
(:class:`medmodal.data.manifest_rows.RowValidator`: same checks, same messages, same row
numbers) and yields one :class:`ManifestChunk` per chunk, so problems are reported
(and logged) as they are found.

What needs the whole file is kept small: the first row of each id (duplicate ids) and
the size of each checked image file (a repeated file is checked once).

Differences from :func:`read_manifest`: a CSV that pandas cannot parse in chunks (a
quote left open, a line with too many cells) falls back to the record-by-record reader
on the whole file (logged); splits are not assigned here (they need every patient's
study count: :func:`medmodal.data.prepare.prepare` does it after a first pass).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medmodal.data.images import ImageReadError
from medmodal.data.manifest import find_manifest_file
from medmodal.data.manifest_contract import IMAGE_CHECK_THREADS, ManifestError, view_matcher
from medmodal.data.manifest_rows import RowValidator, size_or_error, study_image_problems
from medmodal.data.manifest_tables import Table, canonical_column_names, jsonl_tables, plain, read_table
from medmodal.data.types import RowProblem, Study

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_ROWS = 20_000
MAX_REMEMBERED_IMAGE_CHECKS = 500_000  # outcomes kept to check a repeated file once; then forgotten
MAX_LOGGED_PER_CHUNK = 3


@dataclass
class ManifestChunk:
    """One chunk of a streamed manifest: its usable studies (splits not assigned) and its bad rows."""

    studies: list[Study]
    problems: list[RowProblem]
    rows_read: int
    left_out_by_view: int = 0


@dataclass
class _StreamState:
    labels_outside_set: dict[str, int] = field(default_factory=dict)


def stream_manifest(
    path: str | Path,
    *,
    labels: list[str] | None = None,
    check_images: bool = True,
    allow_outside_paths: bool = False,
    views: list[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    labels_outside_set: dict[str, int] | None = None,
) -> Iterator[ManifestChunk]:
    """Validate the manifest ``path`` chunk by chunk (the row rules of :func:`read_manifest`).

    Args:
        path: manifest file or its folder.
        labels, check_images, allow_outside_paths, views: as for :func:`read_manifest`.
        chunk_rows: rows per chunk (bounds the memory the cells take).
        labels_outside_set: if given, filled with the count of each label outside ``labels``.

    Yields:
        :class:`ManifestChunk`; each chunk's bad rows are logged (WARNING) as it is read.

    Raises:
        ManifestError: unreadable file or no ``id`` column.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    file = find_manifest_file(path)
    validator = RowValidator(file, configured_labels=labels, allow_outside_paths=allow_outside_paths)
    wanted = view_matcher(views) if views is not None else None
    image_checks: dict[Path, tuple[int, int] | ImageReadError] = {}
    for table in _tables(file, chunk_rows):
        candidates = [s for s in (validator.validate(*row) for row in table.rows()) if s is not None]
        problems = table.problems + validator.problems
        validator.problems = []  # the next rows' recorders write to a fresh list
        left_out = 0
        if wanted is not None:
            before = len(candidates)
            candidates = [s for s in candidates if wanted(s.view)]
            left_out = before - len(candidates)
        if check_images:
            problems += _image_problems(candidates, file, image_checks)
        bad_rows = {p.row for p in problems}
        problems.sort(key=lambda p: p.row)
        _log_chunk(problems)
        yield ManifestChunk(
            studies=[s for s in candidates if s.row not in bad_rows],
            problems=problems,
            rows_read=table.row_count,
            left_out_by_view=left_out,
        )
    if labels_outside_set is not None:
        labels_outside_set.update(validator.labels_outside_set)


# ------------------------------------------------------------------ chunked tables
def _tables(file: Path, chunk_rows: int) -> Iterator[Table]:
    suffix = file.suffix.lower()
    try:
        if suffix == ".csv":
            yield from _csv_tables(file, chunk_rows)
        elif suffix in (".jsonl", ".ndjson"):
            yield from (_checked(table, file) for table in jsonl_tables(file, chunk_rows))
        elif suffix in (".parquet", ".pq"):
            yield from _parquet_tables(file, chunk_rows)
        else:
            raise ManifestError(
                f"{file}: unsupported manifest type {suffix!r} (use .csv, .jsonl or .parquet)"
            )
    except ManifestError:
        raise
    except (OSError, ValueError) as err:
        raise ManifestError(f"{file}: cannot read manifest: {' '.join(str(err).splitlines())}") from err


def _checked(table: Table, file: Path) -> Table:
    table.columns = canonical_column_names(table.columns)
    if "id" not in table.columns and table.row_numbers:
        raise ManifestError(f"{file}: no 'id' column (columns found: {', '.join(table.columns) or 'none'})")
    return table


def _csv_tables(file: Path, chunk_rows: int) -> Iterator[Table]:
    yielded = False
    try:
        reader = pd.read_csv(file, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
                             skip_blank_lines=False, chunksize=chunk_rows)  # fmt: skip
        with reader:
            for frame in reader:
                for name in frame.columns:
                    frame[name] = frame[name].str.strip()
                nonempty = (
                    (frame != "").any(axis=1).to_numpy() if len(frame.columns) else np.zeros(len(frame), bool)
                )
                row_numbers = (frame.index.to_numpy()[nonempty] + 2).tolist()  # header = row 1
                frame = frame[nonempty]
                yielded = True
                yield _checked(Table({str(c): frame[c].tolist() for c in frame.columns}, row_numbers), file)
    except pd.errors.ParserError as err:
        if yielded:  # rows already streamed: name the first unparsable place instead of restarting
            raise ManifestError(f"{file}: cannot read manifest past the rows already read: "
                                f"{' '.join(str(err).split())}") from err  # fmt: skip
        logger.warning("%s: not parsable in chunks (%s); reading it record by record",
                       file, " ".join(str(err).split()))  # fmt: skip
        table = read_table(file)  # names each bad line; holds the whole file
        yield from _split_table(table, chunk_rows)
    except pd.errors.EmptyDataError as err:
        raise ManifestError(f"{file}: cannot read manifest: empty file") from err


def _split_table(table: Table, chunk_rows: int) -> Iterator[Table]:
    yield Table({}, [], table.problems)
    for start in range(0, len(table.row_numbers), chunk_rows):
        stop = start + chunk_rows
        yield Table({k: v[start:stop] for k, v in table.columns.items()}, table.row_numbers[start:stop])


def _parquet_tables(file: Path, chunk_rows: int) -> Iterator[Table]:
    import pyarrow.parquet as pq

    first_row = 1
    for batch in pq.ParquetFile(file).iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        columns = {str(c): [plain(v) for v in frame[c].tolist()] for c in frame.columns}
        yield _checked(Table(columns, list(range(first_row, first_row + len(frame)))), file)
        first_row += len(frame)


# --------------------------------------------------------------------- image checks
def _image_problems(studies: list[Study], file: Path, outcomes: dict) -> list[RowProblem]:
    """Decode-check each image not checked before (threaded), and boxes against its size."""
    from concurrent.futures import ThreadPoolExecutor

    new = sorted({s.image for s in studies if s.image is not None and s.image not in outcomes})
    if len(outcomes) + len(new) > MAX_REMEMBERED_IMAGE_CHECKS:
        outcomes.clear()  # bounded memory; a file seen again later is checked again
    if new:
        with ThreadPoolExecutor(max_workers=min(IMAGE_CHECK_THREADS, len(new))) as pool:
            outcomes.update(zip(new, pool.map(size_or_error, new)))
    problems = []
    for study in studies:
        if study.image is None:
            continue
        outcome = outcomes.get(study.image)
        if outcome is None:
            outcome = outcomes[study.image] = size_or_error(study.image)
        problems.extend(study_image_problems(study, outcome, file))
    return problems


def _log_chunk(problems: list[RowProblem]) -> None:
    if not problems:
        return
    shown = "\n".join(f"  {p}" for p in problems[:MAX_LOGGED_PER_CHUNK])
    more = len(problems) - MAX_LOGGED_PER_CHUNK
    logger.warning("%d bad row problem(s) in this chunk:\n%s%s", len(problems), shown,
                   f"\n  ... and {more} more in this chunk" if more > 0 else "")  # fmt: skip
