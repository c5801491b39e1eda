"""Tiny on-disk datasets for the data tests (no dependency on the synthetic generator)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file

MANIFEST_COLUMNS = (
    "id", "patient_id", "image", "indication", "findings", "impression", "labels", "boxes", "split", "site",
)  # fmt: skip


def gradient(height: int = 40, width: int = 60) -> np.ndarray:
    """uint8 [H, W] horizontal ramp 0..255 (left dark, right bright)."""
    return np.tile(np.linspace(0, 255, width).round().astype(np.uint8), (height, 1))


def write_png(path: Path, pixels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient() if pixels is None else pixels).save(path)
    return path


def write_jpeg(path: Path, pixels: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gradient() if pixels is None else pixels).save(path, quality=95)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def copy_pydicom_file(name: str, dest: Path, **changes: Any) -> Path:
    """A pydicom test file written to ``dest`` with some attributes changed (None deletes)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest)
    return dest


def row(study_id: str, **cells: Any) -> dict[str, Any]:
    """A manifest row with sensible defaults: text present, no image."""
    base = {c: "" for c in MANIFEST_COLUMNS}
    base.update(id=study_id, findings=f"Findings of {study_id}. No effusion.", impression="Normal.")
    base.update(cells)
    return base


def write_csv(folder: Path, rows: Sequence[dict[str, Any]], name: str = "manifest.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for r in rows for key in r))
    path = folder / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
    return path


def write_jsonl(folder: Path, rows: Sequence[dict[str, Any]], name: str = "manifest.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_rgb_dicom(path: Path, rgb: np.ndarray) -> Path:
    """A minimal secondary-capture DICOM holding an 8-bit RGB image ``[H, W, 3]``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
