"""Import SIIM-ACR Pneumothorax Segmentation (2019) -> a manifest with mask files (RLE decoded) and boxes.

Table ``train-rle.csv``: ``ImageId, EncodedPixels`` (the header has a space before
``EncodedPixels``); ``-1`` = no pneumothorax; several rows per image = several
regions. The run-length code is the challenge's *relative* one on the 1024 x 1024
DICOM: pairs ``(gap, length)``, each gap counted from the end of the previous run,
over the image read column by column (the challenge's ``rle2mask(...).T``).
Images: ``<ImageId>.dcm`` (or a PNG / JPEG copy) anywhere under the image folder.

Manifest: one row per image (``id`` = ``patient_id`` = ``ImageId``, no patient ids
in the release), ``labels`` = ``pneumothorax`` when any region exists, ``boxes``
= one box per region (its bounding box), ``mask`` = ``masks/<ImageId>.png``, a
label map at the stored image's size (0 = background, 1 = pneumothorax, the
first and only label; resized by nearest neighbour when the stored image is not
1024 px), as the segmentation task reads it. No split (the toolkit assigns one).

Bad rows (file, row, field): empty ``ImageId``; a code that is not pairs of
non-negative integers or runs past the image; ``-1`` and a region on the same image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.importers.common import (
    ImportJob,
    ImportResult,
    TableOptions,
    boxes_cell,
    relative_to,
    stored_size,
)
from medmodal.data.importers.tables import SourceTable, TableFormat
from medmodal.data.types import RowProblem
from medmodal.errors import DataError

FORMAT = "siim-pneumothorax"
TABLE = TableFormat(
    ("train-rle.csv", "siim-pneumothorax-train-rle.csv*", "*rle*.csv*"),
    "SIIM train-rle table",
    ("ImageId", "EncodedPixels"),
)
LABEL = "pneumothorax"
RELEASE_SIZE = 1024
NO_REGION = "-1"


class RLEError(DataError, ValueError):
    """A run-length code that cannot be decoded on the given grid."""


def decode_relative_rle(code: str, height: int = RELEASE_SIZE, width: int = RELEASE_SIZE) -> np.ndarray:
    """bool [H, W] mask of a SIIM relative run-length code (see the module docstring).

    Raises:
        RLEError: not an even count of non-negative integers, or a run beyond ``height * width``.
    """
    try:
        values = np.array(code.split(), dtype=np.int64)
    except (ValueError, OverflowError) as err:
        raise RLEError(f"not integers ({err})") from err
    if values.size == 0 or values.size % 2 or (values < 0).any():
        raise RLEError(f"expected pairs of non-negative integers, got {values.size} value(s)")
    gaps, lengths = values[0::2], values[1::2]
    starts = np.cumsum(gaps + np.concatenate(([0], lengths[:-1])))
    ends = starts + lengths
    if ends[-1] > height * width:
        raise RLEError(f"runs end at pixel {int(ends[-1])}, beyond the {width} x {height} image")
    flat = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(flat, starts, 1)
    np.add.at(flat, ends, -1)
    return (np.cumsum(flat[:-1]) > 0).reshape(width, height).T


def import_siim(
    source: str | os.PathLike, out_dir: str | os.PathLike, **options: Unpack[TableOptions]
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` and ``out_dir/masks/*.png`` (see the module docstring)."""
    job, table = ImportJob.with_table(FORMAT, TABLE, Path(source), out_dir, **options)
    problems: list[RowProblem] = []
    regions = _regions(table, problems)
    rows = []
    for image_id, masks in regions.items():
        path = job.images.by_name(image_id)
        row = {
            "id": image_id,
            "patient_id": image_id,
            "image": "",
            "labels": LABEL if masks else "",
            "boxes": "",
            "mask": "",
        }
        size = stored_size(path) if path is not None else None
        if path is not None and size is not None:
            row["image"] = job.images.cell(path)
            row["mask"], row["boxes"] = _write_mask(
                masks, size, job.out / "masks" / f"{image_id}.png", job.out
            )
        rows.append(row)
    return job.finish(rows, source_rows=len(table), problems=problems)


def _regions(table: SourceTable, problems: list[RowProblem]) -> dict[str, list[str]]:
    """``{ImageId: [checked run-length code]}`` (empty list = no pneumothorax); decoded again when writing,
    so that only one image's masks are in memory at a time."""
    regions: dict[str, list[str]] = {}
    said_none: set[str] = set()
    bad: set[str] = set()
    file = table.file
    for row, image_id, rec in table.keyed_records("ImageId", problems):
        code = rec["EncodedPixels"]
        found = regions.setdefault(image_id, [])
        if code == NO_REGION:
            said_none.add(image_id)
        else:
            try:
                decode_relative_rle(code)
                found.append(code)
            except RLEError as err:
                problems.append(RowProblem(file, row, "EncodedPixels", str(err), image_id))
                bad.add(image_id)
                continue
        if image_id in said_none and found:
            problems.append(
                RowProblem(file, row, "EncodedPixels", "both -1 (no region) and a region", image_id)
            )
            bad.add(image_id)
    return {k: v for k, v in regions.items() if k not in bad}


def _write_mask(codes: list[str], size: tuple[int, int], path: Path, out: Path) -> tuple[str, str]:
    """Write the label map at the stored size; returns (mask cell, boxes cell)."""
    height, width = size
    union = np.zeros((RELEASE_SIZE, RELEASE_SIZE), dtype=np.uint8)
    boxes = []
    sx, sy = width / RELEASE_SIZE, height / RELEASE_SIZE
    for code in codes:
        mask = decode_relative_rle(code)
        union[mask] = 1
        ys, xs = np.nonzero(mask)
        boxes.append(
            {"label": LABEL, "box": [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]}
        )
    image = Image.fromarray(union)
    if (height, width) != union.shape:
        image = image.resize((width, height), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return relative_to(path, out), boxes_cell(boxes)
