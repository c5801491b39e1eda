"""Reader ratings of generated reports: storage (SQLAlchemy), CSV export and a summary.

The reader study the scoping review found missing: a radiologist (the *reader*)
rates each generated report as clinically acceptable or not and ticks the error
types present. Ratings live in a real database, SQLite by default
(``sqlite:///ratings.db``) or any SQLAlchemy URL (PostgreSQL, MySQL, ...).

One rating per (study, reader, model): rating the same case again replaces the
earlier answer, so a reader can correct a slip.

The summary gives the acceptance rate, counts per error type and, for every
pair of readers with shared cases, Cohen's kappa of their acceptable yes/no
answers (scikit-learn's :func:`~sklearn.metrics.cohen_kappa_score`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sqlalchemy import Boolean, DateTime, Integer, String, Text, UniqueConstraint, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ERROR_TYPES = ("missed_finding", "false_finding", "wrong_laterality", "wrong_severity")
MAX_COMMENT_CHARS = 5000
MAX_NAME_CHARS = 200
# First characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
CSV_COLUMNS = ("study_id", "reader", "model", "acceptable", *ERROR_TYPES, "comment", "created_at")


class Base(DeclarativeBase):
    pass


class RatingRow(Base):
    """One reader's judgement of one generated report."""

    __tablename__ = "ratings"
    __table_args__ = (UniqueConstraint("study_id", "reader", "model", name="one_rating_per_reader"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), index=True)
    reader: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), index=True)
    model: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), default="")
    acceptable: Mapped[bool] = mapped_column(Boolean)
    missed_finding: Mapped[bool] = mapped_column(Boolean, default=False)
    false_finding: Mapped[bool] = mapped_column(Boolean, default=False)
    wrong_laterality: Mapped[bool] = mapped_column(Boolean, default=False)
    wrong_severity: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Rating:
    """A rating as submitted (validated by :meth:`RatingStore.add`)."""

    study_id: str
    reader: str
    acceptable: bool
    errors: tuple[str, ...] = ()
    comment: str = ""
    model: str = ""


def database_url(value: str | Path) -> str:
    """A SQLAlchemy URL as given, or a file path turned into ``sqlite:///<absolute path>``."""
    text = str(value)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class RatingStore:
    """Ratings in a SQLAlchemy database (tables created on first use)."""

    def __init__(self, url: str | Path = "sqlite:///ratings.db"):
        self.url = database_url(url)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            # The web server answers from several threads; SQLite serialises the writes itself.
            kwargs["connect_args"] = {"check_same_thread": False}
        self.engine: Engine = create_engine(self.url, **kwargs)
        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ writing
    def add(self, rating: Rating) -> RatingRow:
        """Store ``rating`` (replacing the same reader's earlier rating of the same study and model).

        Raises:
            ValueError: empty study id or reader, unknown error type, over-long fields.
        """
        validate_rating(rating)
        with self._sessions.begin() as session:
            row = session.scalar(
                select(RatingRow).where(
                    RatingRow.study_id == rating.study_id,
                    RatingRow.reader == rating.reader,
                    RatingRow.model == rating.model,
                )
            )
            if row is None:
                row = RatingRow(study_id=rating.study_id, reader=rating.reader, model=rating.model)
                session.add(row)
            row.acceptable = bool(rating.acceptable)
            for name in ERROR_TYPES:
                setattr(row, name, name in rating.errors)
            row.comment = rating.comment
            row.created_at = datetime.now(timezone.utc)
        return row

    # ------------------------------------------------------------------ reading
    def rows(self, study_id: str | None = None) -> list[RatingRow]:
        """All ratings (of one study if given), oldest first."""
        query = select(RatingRow).order_by(RatingRow.id)
        if study_id is not None:
            query = query.where(RatingRow.study_id == study_id)
        with Session(self.engine) as session:
            return list(session.scalars(query))

    def records(self, study_id: str | None = None) -> list[dict[str, Any]]:
        """Ratings as plain dicts with the :data:`CSV_COLUMNS` keys."""
        return [row_record(row) for row in self.rows(study_id)]

    def export_csv(self, out: str | Path | None = None) -> str:
        """All ratings as CSV text (one row per rating, :data:`CSV_COLUMNS`); also written to ``out`` if given.

        Every cell is quoted and text that a spreadsheet would run as a formula gets a
        leading ``'`` (:func:`csv_cell`): comments and names are typed by readers.
        """
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in record.items()} for record in self.records())
        text = buffer.getvalue()
        if out is not None:
            Path(out).write_text(text, newline="")  # the csv module's own line endings
        return text

    def summary(self) -> dict[str, Any]:
        """Acceptance rate, error counts and pairwise Cohen's kappa (see :func:`summarise_ratings`)."""
        return summarise_ratings(self.records())


def validate_rating(rating: Rating) -> None:
    """Raise ValueError naming the field when ``rating`` cannot be stored."""
    for field in ("study_id", "reader"):
        value = getattr(rating, field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"rating field '{field}' must be a non-empty string")
        if len(value) > MAX_NAME_CHARS:
            raise ValueError(f"rating field '{field}' is longer than {MAX_NAME_CHARS} characters")
    unknown = sorted(set(rating.errors) - set(ERROR_TYPES))
    if unknown:
        raise ValueError(
            f"rating field 'errors': unknown error types {unknown}; expected some of {list(ERROR_TYPES)}"
        )
    if len(rating.comment) > MAX_COMMENT_CHARS:
        raise ValueError(f"rating field 'comment' is longer than {MAX_COMMENT_CHARS} characters")
    if len(rating.model) > MAX_NAME_CHARS:
        raise ValueError(f"rating field 'model' is longer than {MAX_NAME_CHARS} characters")


def csv_cell(value: Any) -> Any:
    """``value`` made inert for spreadsheets (OWASP "CSV injection"): text starting, after any
    spaces, with ``=``, ``+``, ``-``, ``@``, tab or carriage return (or a full-width ``＝ ＋ － ＠``)
    gets a leading single quote, so Excel / LibreOffice / Sheets show it as text instead of
    evaluating it (``=HYPERLINK(...)``, ``=cmd|...``). Other values are returned unchanged."""
    if isinstance(value, str) and value.lstrip(" ").startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def row_record(row: RatingRow) -> dict[str, Any]:
    record = {name: getattr(row, name) for name in CSV_COLUMNS}
    record["created_at"] = row.created_at.isoformat() if row.created_at else ""
    return record


def summarise_ratings(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Summary of rating records (dicts with ``study_id``, ``reader``, ``model``, ``acceptable`` and the error flags).

    Returns:
        ``n_ratings``, ``n_studies``, ``readers``, ``acceptance_rate`` (None without ratings),
        ``error_counts`` (per error type, over all ratings), ``per_reader`` (ratings and
        acceptance rate of each reader) and ``agreement``: for each pair of readers with
        shared cases (same study and model; pairs without one are not listed), the number of
        shared cases, the observed agreement and Cohen's kappa of the acceptable answers
        (None when undefined: fewer than two shared cases, or both readers gave one single
        answer throughout).

    Cost: one pass over the records, then sparse reader x case matrix products
    (:func:`pairwise_agreement`), so it grows with the number of ratings and of reader
    pairs that share a case, not with readers squared times ratings. If a reader rated the
    same case twice in ``records``, the later record counts.
    """
    rows = list(records)  # the only pass over ``records``
    readers = sorted({r["reader"] for r in rows})
    reader_index = {name: i for i, name in enumerate(readers)}
    case_index: dict[tuple[str, str], int] = {}
    answers: dict[tuple[int, int], bool] = {}
    for r in rows:
        case = case_index.setdefault((r["study_id"], r["model"]), len(case_index))
        answers[reader_index[r["reader"]], case] = bool(r["acceptable"])
    accepted = np.array([bool(r["acceptable"]) for r in rows], dtype=bool)
    by_reader = np.array([reader_index[r["reader"]] for r in rows], dtype=np.int64)
    n_per_reader = np.bincount(by_reader, minlength=len(readers))
    yes_per_reader = np.bincount(by_reader, weights=accepted, minlength=len(readers))
    per_reader = {
        name: {
            "n_ratings": int(n_per_reader[i]),
            "acceptance_rate": float(yes_per_reader[i] / n_per_reader[i]),
        }
        for i, name in enumerate(readers)
    }
    return {
        "n_ratings": len(rows),
        "n_studies": len(case_index),
        "readers": readers,
        "acceptance_rate": float(accepted.mean()) if rows else None,
        "error_counts": {name: sum(bool(r[name]) for r in rows) for name in ERROR_TYPES},
        "per_reader": per_reader,
        "agreement": pairwise_agreement(answers, readers, len(case_index)),
    }


def pairwise_agreement(
    answers: dict[tuple[int, int], bool], readers: list[str], n_cases: int
) -> list[dict[str, Any]]:
    """Agreement of every pair of readers with at least one shared case.

    Args:
        answers: ``(reader index, case index) -> acceptable``.
        readers: reader names by index.
        n_cases: number of cases (columns).

    The 2 x 2 tables of all pairs come from products of sparse reader x case matrices
    ``Y`` (answered yes) and ``S`` (answered at all): ``S S^T`` counts shared cases,
    ``Y Y^T + (S-Y)(S-Y)^T`` agreements, ``Y S^T`` the first reader's yes answers on the
    shared cases. Cohen's kappa of a 2 x 2 table is ``(p_o - p_e) / (1 - p_e)`` with
    ``p_e = p_a p_b + (1 - p_a)(1 - p_b)``, the value of
    :func:`sklearn.metrics.cohen_kappa_score` (tested against it).
    """
    if not answers:
        return []
    keys = np.array(list(answers), dtype=np.int64)
    yes_flags = np.fromiter(answers.values(), dtype=bool, count=len(answers))
    shape = (len(readers), n_cases)
    rated = sparse.csr_matrix((np.ones(len(keys)), (keys[:, 0], keys[:, 1])), shape=shape)
    yes = sparse.csr_matrix((yes_flags.astype(float), (keys[:, 0], keys[:, 1])), shape=shape)
    no = rated - yes
    shared_matrix = sparse.triu(rated @ rated.T, k=1).tocoo()
    a_idx, b_idx = shared_matrix.row, shared_matrix.col
    order = np.lexsort((b_idx, a_idx))
    a_idx, b_idx = a_idx[order], b_idx[order]
    if len(a_idx) == 0:  # one reader, or readers without a shared case
        return []
    shared = np.rint(shared_matrix.data[order]).astype(np.int64)
    agree = _entries(yes @ yes.T + no @ no.T, a_idx, b_idx)
    yes_a = _entries(yes @ rated.T, a_idx, b_idx)
    yes_b = _entries(rated @ yes.T, a_idx, b_idx)
    return [
        {
            "readers": [readers[a], readers[b]],
            "shared_cases": int(n),
            "observed_agreement": float(k / n),
            "kappa": kappa_from_counts(int(n), int(k), int(ya), int(yb)),
        }
        for a, b, n, k, ya, yb in zip(a_idx.tolist(), b_idx.tolist(), shared, agree, yes_a, yes_b)
    ]


def _entries(matrix: sparse.spmatrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Integer entries ``matrix[rows[i], cols[i]]`` of a sparse count matrix, as a 1-D array."""
    return np.rint(np.asarray(sparse.csr_matrix(matrix)[rows, cols]).ravel()).astype(np.int64)


def kappa_from_counts(shared: int, agree: int, yes_a: int, yes_b: int) -> float | None:
    """Cohen's kappa of two readers' yes/no answers on ``shared`` cases, from their counts.

    None when undefined: fewer than two shared cases, or chance agreement 1 (both readers
    gave the same single answer throughout).
    """
    if shared < 2 or (yes_a == yes_b and yes_a in (0, shared)):
        return None
    p_a, p_b = yes_a / shared, yes_b / shared
    chance = p_a * p_b + (1 - p_a) * (1 - p_b)
    return (agree / shared - chance) / (1 - chance)
