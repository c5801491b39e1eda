"""Question–answer records about studies (visual question answering), read from / written to JSON Lines.

One record per line of ``qa.jsonl``, next to a dataset's manifest::

    {"study_id": "S000012", "question": "Is there a pleural effusion?", "answer": "yes",
     "answer_type": "closed", "question_type": "presence"}

=================  ==========================================================================
field              meaning
=================  ==========================================================================
``study_id``       the ``id`` of a manifest row (the image the question is about); required
``question``       free text; required, non-empty
``answer``         free text (compared after :func:`normalize_answer`); required, non-empty
``answer_type``    ``closed`` (yes/no or a small fixed set of choices) or ``open``; required
``question_type``  what is asked (``presence``, ``laterality``, ``size``, ...; VQA-RAD:
                   ``PRES``, ``POS``, ...); optional, default ``""``
``split``          ``train`` / ``val`` / ``test``; optional. Empty = the split of the study
                   (data sets such as VQA-RAD ask test questions about training images,
                   so the split belongs to the question there)
``qid``            the source's question id; optional
=================  ==========================================================================

:func:`read_qa` validates every line and raises one :class:`QAFileError` naming
the file, line and field of each bad record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from medmodal.data.jsonl import numbered_lines
from medmodal.data.types import SPLITS, RowProblem, listed_problems
from medmodal.errors import DataError, InputNotFoundError

QA_FILE = "qa.jsonl"
ANSWER_TYPES = ("closed", "open")


class QAFileError(DataError, ValueError):
    """A QA file that cannot be used; ``problems`` lists each bad record."""

    def __init__(self, message: str, problems: list[RowProblem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass(frozen=True)
class QARecord:
    """One question about one study, with its reference answer."""

    study_id: str
    question: str
    answer: str
    answer_type: str  # "closed" / "open"
    question_type: str = ""
    split: str = ""  # "" = the study's split
    qid: str = ""

    def to_json(self) -> dict:
        """The JSON object of this record; optional fields are left out when empty."""
        data = asdict(self)
        return {key: value for key, value in data.items() if value != "" or key in _REQUIRED}


_REQUIRED = ("study_id", "question", "answer", "answer_type")


def normalize_answer(answer: object) -> str:
    """Answer text as compared: lower case, single spaces, no trailing full stop (``" Yes. "`` -> ``"yes"``)."""
    text = " ".join(str(answer).split()).lower()
    return text[:-1].rstrip() if text.endswith(".") else text


def write_qa(path: str | os.PathLike, records: Iterable[QARecord]) -> int:
    """Write records as JSON Lines (UTF-8, ``\\n``); returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json()) + "\n")
            count += 1
    return count


def read_qa(path: str | os.PathLike) -> list[QARecord]:
    """Read and validate a ``qa.jsonl`` file (or the ``qa.jsonl`` inside a folder).

    Blank lines are skipped. Raises :class:`QAFileError` listing every bad line
    (file, line number, field, problem), or when the file holds no record.
    """
    file = Path(path)
    if file.is_dir():
        file = file / QA_FILE
    if not file.is_file():
        raise InputNotFoundError(f"QA file not found: {file}")
    records: list[QARecord] = []
    problems: list[RowProblem] = []
    for line_number, line in numbered_lines(file):
        record = _parse_line(line, str(file), line_number, problems)
        if record is not None:
            records.append(record)
    if problems:
        raise QAFileError(f"{file}: {len(problems)} bad QA record(s):{listed_problems(problems)}", problems)
    if not records:
        raise QAFileError(f"{file}: no QA record")
    return records


def record_problems(data: object) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs of one decoded record (empty list = valid)."""
    if not isinstance(data, dict):
        return [("<record>", f"expected a JSON object, got {type(data).__name__}")]
    problems = text_field_problems(data, _REQUIRED)
    answer_type = data.get("answer_type")
    if (
        isinstance(answer_type, str)
        and answer_type.strip()
        and answer_type.strip().lower() not in ANSWER_TYPES
    ):
        problems.append(("answer_type", f"{answer_type!r} is not one of {list(ANSWER_TYPES)}"))
    split = data.get("split") or ""
    if not isinstance(split, str) or (split and split.lower() not in SPLITS):
        problems.append(("split", f"{split!r} is not one of {list(SPLITS)} (or empty)"))
    return problems


def text_field_problems(data: dict, names: Iterable[str]) -> list[tuple[str, str]]:
    """``(field, problem)`` for each of ``names`` that is missing or empty in ``data``, or not text or a number."""
    problems = []
    for name in names:
        value = data.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            problems.append((name, "missing or empty"))
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            problems.append((name, f"expected text, got {type(value).__name__}"))
    return problems


def _parse_line(line: str, file: str, line_number: int, problems: list[RowProblem]) -> QARecord | None:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        problems.append(RowProblem(file, line_number, "<json>", f"not valid JSON ({err.msg})"))
        return None
    found = record_problems(data)
    if found:
        study_id = str(data.get("study_id") or "") if isinstance(data, dict) else ""
        problems.extend(
            RowProblem(file, line_number, field, message, study_id or None) for field, message in found
        )
        return None
    return QARecord(
        study_id=str(data["study_id"]).strip(),
        question=" ".join(str(data["question"]).split()),
        answer=normalize_answer(data["answer"]),
        answer_type=str(data["answer_type"]).strip().lower(),
        question_type=str(data.get("question_type") or "").strip(),
        split=str(data.get("split") or "").strip().lower(),
        qid=str(data.get("qid") or ""),
    )
