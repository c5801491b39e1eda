"""Import CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` + the image folders -> a manifest.

Table columns: ``Path`` (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``),
``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and the 14 observations, each
``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned).
The labeller's output is per study; the table repeats it on every view.

Manifest: one row per study (``id`` = ``patient00001_study1``, ``patient_id`` =
``patient00001``), its image the first frontal view (else the first view); every
view's path is kept in ``image_ids``. ``labels`` = the positive observations in
manifest form (``Pleural Effusion`` -> ``pleural_effusion``; ``No Finding`` is
not a label: an empty cell means no finding). Uncertain observations follow
``uncertain`` (:data:`UNCERTAIN_POLICIES`): ``negative`` (U-Zeros, the default),
``positive`` (U-Ones); either way they are listed in the ``uncertain`` column, so
a masked (U-Ignore) loss can be built from the manifest. Blank = negative.
Split: ``valid.csv`` -> ``val``, ``test.csv`` -> ``test``, ``train.csv`` -> none
(the toolkit assigns train / val / test by patient when reading).

Bad rows (file, row, field): a ``Path`` not in the patient/study/view layout, an
observation value that is not 1 / 0 / -1 / blank. Paths are looked up under the
image folder only (an absolute path or ``..`` finds nothing).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import (
    ImageFolder,
    ImportJob,
    ImportResult,
    TableOptions,
    folder_of,
    label_name,
)
from medmodal.data.importers.tables import ImportFormatError, read_table, records
from medmodal.data.types import RowProblem
from medmodal.errors import InputNotFoundError

FORMAT = "chexpert"
OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)  # fmt: skip
UNCERTAIN_POLICIES = ("negative", "positive")
UncertainPolicy = Literal["negative", "positive"]
_VALUES = {"": 0, "0": 0, "0.0": 0, "1": 1, "1.0": 1, "-1": -1, "-1.0": -1}
_PATH = re.compile(r"(?:^|/)(patient\d+)/(study\d+)/(view\d+)_(frontal|lateral)\.\w+$")
TABLE_SPLITS = {"valid": "val", "val": "val", "test": "test", "train": ""}


def observation_labels(
    rec: dict[str, str],
    columns: Sequence[str],
    policy: UncertainPolicy,
    where: tuple[str, int, str],
    problems: list[RowProblem],
) -> tuple[list[str], list[str]] | None:
    """``(labels, uncertain)`` of one CheXpert-labeller row, or None with a problem recorded.

    ``columns``: the observation columns present; ``No Finding`` gives no label.
    ``where``: (file, row, study id) for the problem.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain-label policy must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    positive, uncertain = [], []
    for column in columns:
        value = _VALUES.get(rec[column])
        if value is None:
            problems.append(RowProblem(where[0], where[1], column,
                                       f"{rec[column][:20]!r} is not 1, 0, -1 or blank", where[2] or None))  # fmt: skip
            return None
        if column == "No Finding":
            continue
        if value == 1 or (value == -1 and policy == "positive"):
            positive.append(label_name(column))
        if value == -1:
            uncertain.append(label_name(column))
    return sorted(positive), sorted(uncertain)


def import_chexpert(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    uncertain: UncertainPolicy = "negative",
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from CheXpert tables (see the module docstring).

    Args:
        source: the release folder (``train.csv``, ``valid.csv``, optional ``test.csv``) or one table.
        images: the folder the ``Path`` cells are relative to; default: the folder
            holding the release folder (the paths start with ``CheXpert-v1.0[-small]/``).
            A path is also tried without its first folder, so the release folder itself works.
    """
    source = Path(source)
    tables = _tables(source)
    job = ImportJob.start(FORMAT, out_dir, folder_of(source).parent, **options)
    problems: list[RowProblem] = []
    studies: dict[str, dict] = {}
    source_rows = 0
    for table_path, split in tables:
        table = read_table(table_path, ["Path"])
        columns = [c for c in OBSERVATIONS if c in table.columns]
        if not columns:
            raise ImportFormatError(
                f"{table_path}: none of the CheXpert observation columns {list(OBSERVATIONS)}"
            )
        source_rows += len(table)
        for rec in records(table):
            _add_view(rec, str(table_path), split, columns, uncertain, job.images, studies, problems)
    rows = [_manifest_row(study, job.images) for study in studies.values()]
    return job.finish(rows, source_rows=source_rows, problems=problems, notes={"uncertain_policy": uncertain})


def _tables(source: Path) -> list[tuple[Path, str | None]]:
    if source.is_file():
        return [(source, _table_split(source.name))]
    if not source.is_dir():
        raise InputNotFoundError(f"{source}: not found")
    found = sorted(
        p
        for p in source.iterdir()
        if p.name.endswith((".csv", ".csv.gz")) and _table_split(p.name) is not None
    )
    if not found:
        raise InputNotFoundError(f"{source}: no CheXpert table (train.csv / valid.csv / test.csv)")
    return [(p, _table_split(p.name)) for p in found]


def _table_split(name: str) -> str | None:
    stem = name.lower().split(".")[0]
    for key, split in TABLE_SPLITS.items():
        if stem == key or stem.endswith("_" + key):
            return split
    return None


def _add_view(rec, file, split, columns, policy, image_folder, studies, problems) -> None:
    row, path = rec["_row"], rec["Path"]
    match = _PATH.search(path.replace("\\", "/"))
    if not match:
        problems.append(
            RowProblem(file, row, "Path", f"not .../patientN/studyN/viewN_frontal|lateral.jpg: {path[:80]!r}")
        )
        return
    patient, study, _view, orientation = match.groups()
    study_id = f"{patient}_{study}"
    labels = observation_labels(rec, columns, policy, (file, row, study_id), problems)
    if labels is None:
        return
    entry = studies.setdefault(study_id, {"id": study_id, "patient_id": patient, "split": split,
                                          "labels": labels, "views": [], "sex": rec.get("Sex", ""),
                                          "age": rec.get("Age", "")})  # fmt: skip
    frontal = orientation == "frontal" or rec.get("Frontal/Lateral", "").lower() == "frontal"
    entry["views"].append((path, frontal, rec.get("AP/PA", "") if frontal else "LL"))


def _manifest_row(study: dict, image_folder: ImageFolder) -> dict[str, str]:
    views = sorted(study["views"], key=lambda v: not v[1])  # frontal first, table order otherwise
    image, view = "", ""
    for path, _frontal, position in views:
        found = image_folder.relative(path) or image_folder.relative(path.split("/", 1)[-1])
        if found is not None:
            image, view = image_folder.cell(found), position
            break
    labels, uncertain = study["labels"]
    return {"id": study["id"], "patient_id": study["patient_id"], "image": image, "labels": ";".join(labels),
            "split": study["split"], "uncertain": ";".join(uncertain), "view": view, "sex": study["sex"],
            "age": study["age"], "image_ids": ";".join(v[0] for v in study["views"])}  # fmt: skip
