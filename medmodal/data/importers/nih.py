"""Import NIH ChestX-ray14 (Wang et al., CVPR 2017): ``Data_Entry_2017*.csv`` + ``BBox_List_2017.csv`` -> a manifest.

The release: 112,120 frontal PNGs (1024 x 1024) spread over ``images_001/images/``
... ``images_012/images/``, ``Data_Entry_2017_v2020.csv`` (one row per image:
``Image Index``, ``Finding Labels`` joined by ``|`` or ``No Finding``,
``Follow-up #``, ``Patient ID``, ``Patient Age``, ``Patient Gender``, ``View Position``),
``BBox_List_2017.csv`` (984 boxes on 880 images, ``x, y, w, h`` in pixels of the
1024-px images) and the official patient-wise split ``train_val_list.txt`` /
``test_list.txt``.

Manifest: one row per image; ``id`` = the file stem, ``patient_id`` = ``Patient ID``,
``labels`` = the 14 findings in manifest form (``Pleural_Thickening`` ->
``pleural_thickening``; ``No Finding`` = no label), ``boxes`` scaled from the
1024-px grid to the stored image's size (read from its header, so downsampled
copies get matching boxes), extra columns ``view``, ``age``, ``sex``, ``follow_up``.
The box file's ``Infiltrate`` is the table's ``Infiltration``.

Splits (``splits``): ``official`` (default) = ``test_list.txt`` -> test and
``train_val_list.txt`` -> train / val by patient (``val_fraction``, seeded), when
both lists are next to the table (otherwise no split: the toolkit assigns one by
patient when reading); ``folders`` = from a parent folder of each image named
train / val / valid / test (re-packaged copies); ``none``.

Bad rows (named by file, row, field): empty ``Image Index``, a duplicate image,
an unknown finding name, a box with non-numeric or non-positive size, a box whose
finding is not among the image's labels or whose image is not in the table.
Images not found under the image folder are left out (counted).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import (
    ImportJob,
    ImportResult,
    TableOptions,
    boxes_at_stored_size,
    folder_of,
    label_name,
    split_from_folders,
)
from medmodal.data.importers.tables import SourceTable, find_table, first_match, numbers
from medmodal.data.splits import patient_splits
from medmodal.data.types import RowProblem, Study

FORMAT = "nih"
DATA_ENTRY = ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz")
BBOX_LIST = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax",
)  # fmt: skip
NO_FINDING = "No Finding"
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
RELEASE_SIZE = 1024  # the boxes' pixel grid
BOX_FIELDS = ("Bbox x", "Bbox y", "Bbox w", "Bbox h")  # problem field names of the box columns
SplitPolicy = Literal["official", "folders", "none"]


@dataclass
class _Entry:
    row: int
    image_index: str
    patient_id: str
    labels: list[str]
    extra: dict[str, str]


def import_nih(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    splits: SplitPolicy = "official",
    val_fraction: float = 0.1,
    seed: int = 0,
    any_finding: str | None = None,
    **options: Unpack[TableOptions],
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from the NIH tables and images (see the module docstring).

    Args:
        source: the release folder (holding ``Data_Entry_2017*.csv[.gz]``, optionally
            ``BBox_List_2017.csv[.gz]`` and the split lists) or the Data_Entry file.
        images: folder searched (recursively) for the PNGs; default: the source folder.
        copy_images: copy the images into ``out_dir/images`` instead of referencing them in place.
        splits, val_fraction, seed: see the module docstring.
        any_finding: also give every image with at least one finding this label
            (e.g. ``abnormal``, for a normal-vs-abnormal task with ``data.labels: [abnormal]``).
        strict: raise on any bad source row instead of leaving it out.
        check_images: decode-check every image when reading the manifest back.
    """
    source = Path(source)
    folder = folder_of(source)
    table_path = find_table(source, DATA_ENTRY, "NIH Data_Entry_2017 table")
    problems: list[RowProblem] = []
    entries = read_entries(table_path, problems)
    boxes = read_boxes(first_match(folder, BBOX_LIST), entries, problems) if source.is_dir() else {}
    job = ImportJob.start(FORMAT, out_dir, folder, **options)
    split_of = _official_splits(folder, entries, val_fraction, seed) if splits == "official" else {}
    extra_label = label_name(any_finding) if any_finding else ""
    if extra_label in {label_name(n) for n in NIH_FINDINGS}:
        raise ValueError(f"any_finding {any_finding!r} is one of the NIH findings; choose another name")
    rows = []
    for entry in entries.values():
        path = job.images.by_name(entry.image_index)
        labels = entry.labels + [extra_label] if extra_label and entry.labels else entry.labels
        split = split_of.get(entry.image_index, "")
        if splits == "folders" and path is not None:
            split = split_from_folders(path.relative_to(job.images.root))
        rows.append({
            "id": Path(entry.image_index).stem,
            "patient_id": entry.patient_id,
            "image": job.images.cell(path) if path is not None else "",
            "labels": ";".join(labels),
            "boxes": boxes_at_stored_size(boxes.get(entry.image_index, []), path, RELEASE_SIZE),
            "split": split,
            **entry.extra,
        })  # fmt: skip
    notes = {"split_policy": splits if (splits != "official" or split_of) else "none (no split lists found)"}
    return job.finish(rows, source_rows=len(entries) + len(problems), problems=problems, notes=notes)


def read_entries(path: Path, problems: list[RowProblem]) -> dict[str, _Entry]:
    """The Data_Entry rows by ``Image Index``; bad rows go to ``problems``."""
    table = SourceTable.read(path, ["Image Index", "Finding Labels", "Patient ID"])
    known = {name.lower(): name for name in NIH_FINDINGS}
    entries: dict[str, _Entry] = {}
    file = table.file
    for row, image, rec in table.keyed_records("Image Index", problems, kept=entries):
        names = [n.strip() for n in rec["Finding Labels"].split("|") if n.strip()]
        unknown = [n for n in names if n != NO_FINDING and n.lower() not in known]
        if not names or unknown:
            message = (
                f"unknown finding(s) {unknown}" if unknown else "empty (the release writes 'No Finding')"
            )
            problems.append(RowProblem(file, row, "Finding Labels", message, image))
            continue
        labels = sorted({label_name(known[n.lower()]) for n in names if n != NO_FINDING})
        extra = {"view": rec.get("View Position", ""), "age": rec.get("Patient Age", ""),
                 "sex": rec.get("Patient Gender", ""), "follow_up": rec.get("Follow-up #", "")}  # fmt: skip
        entries[image] = _Entry(row, image, rec["Patient ID"], labels, extra)
    return entries


def read_boxes(
    path: Path | None, entries: dict[str, _Entry], problems: list[RowProblem]
) -> dict[str, list[dict]]:
    """``{Image Index: [{"label", "box": [x0, y0, x1, y1]}]}`` in the 1024-px grid, checked against the entries."""
    if path is None:
        return {}
    table = SourceTable.read(path, ["Image Index", "Finding Label"])
    columns = list(table.frame.columns)
    position = columns.index("Finding Label")
    coordinate_columns = columns[position + 1 : position + 5]
    if len(coordinate_columns) != 4 or "_row" in coordinate_columns:
        raise ValueError(f"{path}: expected 4 box columns (x, y, w, h) after 'Finding Label'")
    file = table.file
    boxes: dict[str, list[dict]] = {}
    for rec in table.records():
        row, image = rec["_row"], rec["Image Index"]
        finding = BOX_LABEL_ALIASES.get(rec["Finding Label"], rec["Finding Label"])
        values = numbers(rec, coordinate_columns, file, problems, image, BOX_FIELDS)
        if values is None:
            continue
        x, y, w, h = values
        entry = entries.get(image)
        if w <= 0 or h <= 0:
            problems.append(
                RowProblem(file, row, "Bbox [x,y,w,h]", f"width and height must be > 0, got {w}, {h}", image)
            )
        elif entry is None:
            problems.append(
                RowProblem(file, row, "Image Index", "image not in the Data_Entry table", image or None)
            )
        elif label_name(finding) not in entry.labels:
            problems.append(RowProblem(file, row, "Finding Label",
                                       f"{rec['Finding Label']!r} is not among the image's findings {entry.labels}", image))  # fmt: skip
        else:
            boxes.setdefault(image, []).append({"label": label_name(finding), "box": [x, y, x + w, y + h]})
    return boxes


def _official_splits(
    folder: Path, entries: dict[str, _Entry], val_fraction: float, seed: int
) -> dict[str, str]:
    """``{Image Index: split}`` from ``train_val_list.txt`` / ``test_list.txt``; empty if they are absent."""
    lists = {name: folder / f"{name}_list.txt" for name in ("train_val", "test")}
    if not all(p.is_file() for p in lists.values()):
        return {}
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    names = {key: [n.strip() for n in p.read_text().splitlines() if n.strip()] for key, p in lists.items()}
    split = dict.fromkeys(names["test"], "test")
    train_val = [n for n in names["train_val"] if n in entries and n not in split]
    studies = [Study(id=n, row=0, patient_id=entries[n].patient_id) for n in train_val]
    split.update(zip(train_val, patient_splits(studies, (1.0 - val_fraction, val_fraction, 0.0), seed)))
    return split
