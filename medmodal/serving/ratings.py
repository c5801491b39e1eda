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
import itertools
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, Text, UniqueConstraint, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ERROR_TYPES = ("missed_finding", "false_finding", "wrong_laterality", "wrong_severity")
MAX_COMMENT_CHARS = 5000
MAX_NAME_CHARS = 200
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
        """All ratings as CSV text (one row per rating, :data:`CSV_COLUMNS`); also written to ``out`` if given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(self.records())
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
        raise ValueError(f"rating field 'errors': unknown error types {unknown}; expected some of {list(ERROR_TYPES)}")
    if len(rating.comment) > MAX_COMMENT_CHARS:
        raise ValueError(f"rating field 'comment' is longer than {MAX_COMMENT_CHARS} characters")
    if len(rating.model) > MAX_NAME_CHARS:
        raise ValueError(f"rating field 'model' is longer than {MAX_NAME_CHARS} characters")


def row_record(row: RatingRow) -> dict[str, Any]:
    record = {name: getattr(row, name) for name in CSV_COLUMNS}
    record["created_at"] = row.created_at.isoformat() if row.created_at else ""
    return record


def summarise_ratings(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Summary of rating records (dicts with ``study_id``, ``reader``, ``model``, ``acceptable`` and the error flags).

    Returns:
        ``n_ratings``, ``n_studies``, ``readers``, ``acceptance_rate`` (None without ratings),
        ``error_counts`` (per error type, over all ratings), ``per_reader`` (ratings and
        acceptance rate of each reader) and ``agreement``: for each pair of readers with
        shared cases (same study and model), the number of shared cases, the observed
        agreement and Cohen's kappa of the acceptable answers (None when undefined: fewer
        than two shared cases, or both readers gave one single answer throughout).
    """
    readers = sorted({r["reader"] for r in records})
    per_reader = {}
    for reader in readers:
        mine = [r for r in records if r["reader"] == reader]
        per_reader[reader] = {"n_ratings": len(mine), "acceptance_rate": _rate(mine)}
    return {
        "n_ratings": len(records),
        "n_studies": len({(r["study_id"], r["model"]) for r in records}),
        "readers": readers,
        "acceptance_rate": _rate(records),
        "error_counts": {name: sum(bool(r[name]) for r in records) for name in ERROR_TYPES},
        "per_reader": per_reader,
        "agreement": [_pair_agreement(records, a, b) for a, b in itertools.combinations(readers, 2)],
    }


def _rate(records: list[dict[str, Any]]) -> float | None:
    return sum(bool(r["acceptable"]) for r in records) / len(records) if records else None


def _pair_agreement(records: list[dict[str, Any]], reader_a: str, reader_b: str) -> dict[str, Any]:
    from sklearn.metrics import cohen_kappa_score

    answers_a = {(r["study_id"], r["model"]): bool(r["acceptable"]) for r in records if r["reader"] == reader_a}
    answers_b = {(r["study_id"], r["model"]): bool(r["acceptable"]) for r in records if r["reader"] == reader_b}
    shared = sorted(set(answers_a) & set(answers_b))
    a = [answers_a[k] for k in shared]
    b = [answers_b[k] for k in shared]
    kappa = None
    if len(shared) >= 2 and len(set(a) | set(b)) > 1:
        value = float(cohen_kappa_score(a, b))
        kappa = None if math.isnan(value) else value  # NaN when chance agreement is 1
    return {
        "readers": [reader_a, reader_b],
        "shared_cases": len(shared),
        "observed_agreement": (sum(x == y for x, y in zip(a, b)) / len(shared)) if shared else None,
        "kappa": kappa,
    }
