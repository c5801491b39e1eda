"""Import VQA-RAD (radiology visual question answering, Lau et al. 2018) into a manifest + ``qa.jsonl``.

The release is one JSON file (``VQA_RAD Dataset Public.json``; the common
train/test copies ``trainset.json`` / ``testset.json`` have the same records) and
a folder of the 315 images. Each record is one question::

    {"qid": 0, "image_name": "synpic54610.jpg", "image_organ": "HEAD",
     "question": "Are regions of the brain infarcted?", "answer": "Yes",
     "answer_type": "CLOSED", "question_type": "PRES", "phrase_type": "freeform",
     "question_rephrase": "NULL", "question_relation": "NULL", "evaluation": "not evaluated", ...}

What is read: ``image_name`` (required), ``question``, ``answer`` (text or a
number), ``answer_type`` (``CLOSED`` / ``OPEN``, case and spaces ignored),
``question_type`` (kept as written, e.g. ``PRES``, ``"PRES, POS"``), ``qid``,
``phrase_type`` and ``image_organ``. The other fields are ignored.

Written to ``out_dir``:

* ``manifest.csv``: one row per image (``id`` = file name without suffix,
  ``image`` relative to the manifest, extra column ``organ``). VQA-RAD has no
  reports, so the rows are image-only; images have no split of their own (the
  toolkit assigns one, unused by VQA);
* ``qa.jsonl`` (:mod:`medmodal.data.qa`): one record per question, its split
  from ``phrase_type`` (``test_freeform`` / ``test_para`` -> ``test``; the rest
  ``train``, of which a seeded ``val_fraction`` of the images' questions -> ``val``).

A record with a missing or malformed field raises :class:`VQARadFormatError`
listing every bad record (file, record number, qid, field). Questions whose
image file is not in ``images_dir`` are left out and listed in the result.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medmodal.data.manifest import Manifest, read_manifest
from medmodal.data.qa import QA_FILE, QARecord, normalize_answer, text_field_problems, write_qa
from medmodal.data.types import RowProblem, listed_problems
from medmodal.errors import DataError, InputNotFoundError

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = ("image_name", "question", "answer", "answer_type")
ANSWER_TYPES = {"CLOSED": "closed", "OPEN": "open"}
MANIFEST_COLUMNS = ("id", "image", "organ")


class VQARadFormatError(DataError, ValueError):
    """The VQA-RAD JSON is not in the expected format; ``problems`` lists each bad record."""

    def __init__(self, message: str, problems: list[RowProblem] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass
class VQARadImport:
    """What :func:`import_vqa_rad` wrote."""

    manifest_path: Path
    qa_path: Path
    questions: int
    images: int
    missing_images: list[str] = field(default_factory=list)
    split_counts: dict[str, int] = field(default_factory=dict)
    manifest: Manifest | None = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        return {
            "manifest_path": str(self.manifest_path),
            "qa_path": str(self.qa_path),
            "questions": self.questions,
            "images": self.images,
            "questions_by_split": self.split_counts,
            "missing_images": self.missing_images,
        }


def read_vqa_rad_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a VQA-RAD JSON file, validated; raises :class:`VQARadFormatError` naming each bad one."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VQARadFormatError(f"{file}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(data, list):
        raise VQARadFormatError(
            f"{file}: expected a JSON list of question records, got {type(data).__name__}"
        )
    problems = [
        p for index, record in enumerate(data, start=1) for p in record_problems(record, str(file), index)
    ]
    if problems:
        raise VQARadFormatError(
            f"{file}: {len(problems)} bad record(s):{listed_problems(problems)}", problems
        )
    if not data:
        raise VQARadFormatError(f"{file}: no question records")
    return data


def record_problems(record: Any, file: str, index: int) -> list[RowProblem]:
    """Problems of one VQA-RAD record (``index`` = 1-based position in the list)."""
    if not isinstance(record, dict):
        return [RowProblem(file, index, "<record>", f"expected a JSON object, got {type(record).__name__}")]
    qid = str(record.get("qid", "")) or None
    problems = [
        RowProblem(file, index, name, message, qid)
        for name, message in text_field_problems(record, REQUIRED_FIELDS)
    ]
    answer_type = record.get("answer_type")
    if (
        isinstance(answer_type, str)
        and answer_type.strip()
        and answer_type.strip().upper() not in ANSWER_TYPES
    ):
        problems.append(RowProblem(file, index, "answer_type", f"{answer_type!r} is not CLOSED or OPEN", qid))
    return problems


def question_split(phrase_type: str) -> str:
    """``train`` or ``test`` from VQA-RAD's ``phrase_type`` (``test_freeform`` / ``test_para`` are the test set)."""
    return "test" if str(phrase_type or "").strip().lower().startswith("test") else "train"


def qa_record(record: dict[str, Any], split: str) -> QARecord:
    """One validated VQA-RAD record -> a :class:`~medmodal.data.qa.QARecord`."""
    return QARecord(
        study_id=Path(str(record["image_name"]).strip()).stem,
        question=" ".join(str(record["question"]).split()),
        answer=normalize_answer(record["answer"]),
        answer_type=ANSWER_TYPES[str(record["answer_type"]).strip().upper()],
        question_type=str(record.get("question_type") or "").strip(),
        split=split,
        qid=str(record.get("qid", "")),
    )


def import_vqa_rad(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_images: bool = True,
) -> VQARadImport:
    """Write ``out_dir/manifest.csv`` and ``out_dir/qa.jsonl`` from a VQA-RAD JSON file and its image folder.

    Args:
        source: the VQA-RAD JSON (list of question records).
        out_dir: created if needed; both files are overwritten.
        images_dir: the folder holding the ``image_name`` files.
        val_fraction: share of the training *images* whose training questions become ``val``.
        seed: of that choice.
        check_images: decode-check the images when reading the manifest back.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputNotFoundError(f"VQA-RAD image folder not found: {images_dir}")
    records = read_vqa_rad_json(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    present = {
        r["image_name"].strip() for r in records if (images_dir / str(r["image_name"]).strip()).is_file()
    }
    missing = sorted({str(r["image_name"]).strip() for r in records} - present)
    if missing:
        logger.warning(
            "%d VQA-RAD image(s) not found in %s; their questions are left out (first: %s)",
            len(missing),
            images_dir,
            ", ".join(missing[:5]),
        )
    kept = [r for r in records if str(r["image_name"]).strip() in present]
    if not kept:
        raise InputNotFoundError(f"none of the {len(records)} questions' images is in {images_dir}")

    val_images = _validation_images(sorted(present), val_fraction, seed)
    qa = []
    for record in kept:
        split = question_split(record.get("phrase_type", ""))
        if split == "train" and str(record["image_name"]).strip() in val_images:
            split = "val"
        qa.append(qa_record(record, split))

    manifest_path, qa_path = out / "manifest.csv", out / QA_FILE
    organs = {str(r["image_name"]).strip(): str(r.get("image_organ") or "").strip() for r in kept}
    rows = [
        {"id": Path(name).stem, "image": _relative(images_dir / name, out), "organ": organs[name]}
        for name in sorted(present)
    ]
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(manifest_path, index=False)
    write_qa(qa_path, qa)
    manifest = read_manifest(
        manifest_path, check_images=check_images, allow_outside_paths=True
    )  # images in place
    return VQARadImport(
        manifest_path=manifest_path,
        qa_path=qa_path,
        questions=len(qa),
        images=len(rows),
        missing_images=missing,
        split_counts=dict(sorted(Counter(r.split for r in qa).items())),
        manifest=manifest,
    )


def _validation_images(images: list[str], fraction: float, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    n_val = round(fraction * len(images))
    return {images[i] for i in rng.permutation(len(images))[:n_val]}


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), start.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())
