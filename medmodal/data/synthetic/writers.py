"""Writing a study to disk: PNG or DICOM image, PNG label map, manifest row, ground-truth record."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medmodal.data.synthetic.history import related_labels
from medmodal.data.synthetic.latent import MM_PER_UNIT, StudyLatent
from medmodal.data.synthetic.render import Rendering, bounding_box
from medmodal.data.synthetic.report import Report
from medmodal.data.synthetic.vocabulary import LABELS

MANIFEST_COLUMNS = (
    "id",
    "patient_id",
    "image",
    "indication",
    "findings",
    "impression",
    "labels",
    "boxes",
    "split",
    "site",
)
IMAGE_FORMATS = ("png", "dicom-monochrome2", "dicom-monochrome1")

# DICOM encoding of an 8-bit pixel value p (see write_dicom).
DICOM_STORED_PER_LEVEL = 16  # stored value = 16 * p (MONOCHROME2) or 16 * (255 - p) (MONOCHROME1), 12 bits
DICOM_RESCALE_SLOPE = 0.5
DICOM_RESCALE_INTERCEPT = -1024.0
DICOM_WINDOW_CENTER = -3.5  # with the width below, the linear VOI window maps p to exactly p / 255
DICOM_WINDOW_WIDTH = 2041.0
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Save a uint8 [H, W] array as an 8-bit grayscale PNG."""
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"expected a uint8 [H, W] array, got {pixels.dtype} {pixels.shape}")
    Image.fromarray(pixels).save(path, format="PNG")


def write_dicom(path: Path, pixels: np.ndarray, study: StudyLatent, monochrome1: bool) -> None:
    """Save a uint8 [H, W] image as a 12-bit CR DICOM that displays identically to the PNG.

    Stored values are ``16 * p`` (``16 * (255 - p)`` for MONOCHROME1, where high
    values display dark); RescaleSlope/Intercept give modality values
    ``8 * p - 1024``; WindowCenter/Width map those linearly back to ``p / 255``.
    UIDs are derived from the study, so the file is reproducible byte for byte.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    levels = (255 - pixels.astype(np.uint16)) if monochrome1 else pixels.astype(np.uint16)
    stored = (levels * DICOM_STORED_PER_LEVEL).astype(np.uint16)
    instance_uid = generate_uid(entropy_srcs=[study.id, str(study.render_seed), "instance"])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CR_IMAGE_STORAGE)  # pydicom stores UI values as UID anyway
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[study.id, str(study.render_seed), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study.id, str(study.render_seed), "series"])
    ds.Modality = "CR"
    ds.PatientID = study.patient_id
    ds.PatientSex = "M" if study.sex == "male" else "F"
    ds.PatientAge = f"{study.age:03d}Y"
    ds.StudyID = study.id
    ds.StudyDescription = "CHEST"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = study.acquisition.view
    ds.InstitutionName = study.site
    ds.Rows, ds.Columns = pixels.shape
    spacing = round(2.0 * MM_PER_UNIT / (pixels.shape[0] * study.acquisition.scale), 4)
    ds.PixelSpacing = [spacing, spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = DICOM_RESCALE_SLOPE
    ds.RescaleIntercept = DICOM_RESCALE_INTERCEPT
    ds.RescaleType = "US"
    ds.WindowCenter = DICOM_WINDOW_CENTER
    ds.WindowWidth = DICOM_WINDOW_WIDTH
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_image(root: Path, study: StudyLatent, pixels: np.ndarray) -> str:
    """Write the study's image in its format under ``root/images``; returns the manifest-relative path."""
    if study.image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {study.image_format!r}; expected one of {IMAGE_FORMATS}")
    if study.image_format == "png":
        relative = f"images/{study.id}.png"
        write_png(root / relative, pixels)
    else:
        relative = f"images/{study.id}.dcm"
        write_dicom(root / relative, pixels, study, monochrome1=study.image_format == "dicom-monochrome1")
    return relative


def write_mask(root: Path, study: StudyLatent, label_map: np.ndarray) -> str:
    """Write the label map as ``root/masks/<id>.png``; returns the manifest-relative path."""
    relative = f"masks/{study.id}.png"
    write_png(root / relative, label_map)
    return relative


def manifest_row(
    study: StudyLatent, report: Report, rendering: Rendering, image: str, mask: str | None
) -> dict:
    """One manifest row in the dataset contract."""
    present = [label for label in LABELS if label in rendering.boxes]
    boxes = [{"label": label, "box": list(box)} for label in present for box in rendering.boxes[label]]
    row = {
        "id": study.id,
        "patient_id": study.patient_id,
        "image": image,
        "indication": report.indication,
        "findings": report.findings,
        "impression": report.impression,
        "labels": ";".join(present),
        "boxes": json.dumps(boxes) if boxes else "",
        "split": study.split,
        "site": study.site,
    }
    if mask is not None:
        row["mask"] = mask
    return row


def ground_truth_record(study: StudyLatent, report: Report, rendering: Rendering) -> dict:
    """Every latent variable of a study, plus per-label presence / hint / hedging flags."""
    hinted = related_labels(study.history)
    per_label = {}
    for label in LABELS:
        finding = study.finding(label)
        entry: dict[str, Any] = {
            "present": finding is not None,
            "hinted": label in hinted,
            "reported_uncertain": label in report.uncertain,
        }
        if finding is not None:
            entry.update(
                subtle=finding.subtle,
                severity=finding.severity,
                conspicuity=finding.conspicuity,
                side=finding.side,
                grade=finding.grade,
                params=dict(finding.params),
                box=list(bounding_box(rendering.layers[label].extent)),  # all its parts together
                boxes=[list(box) for box in rendering.boxes[label]],  # one per part, as in the manifest
            )
        per_label[label] = entry
    cardiomegaly = study.finding("cardiomegaly")
    return {
        "id": study.id,
        "patient_id": study.patient_id,
        "visit": study.visit,
        "split": study.split,
        "site": study.site,
        "age": study.age,
        "sex": study.sex,
        "heart_failure": study.heart_failure,
        "ctr": float(cardiomegaly.params["ctr"]) if cardiomegaly else study.anatomy.ctr,
        "findings": per_label,
        "history": list(study.history),
        "central_line": study.central_line,
        "image_format": study.image_format,
        "anatomy": asdict(study.anatomy),
        "acquisition": asdict(study.acquisition),
        "render_seed": study.render_seed,
        "text_seed": study.text_seed,
    }


def write_manifest(path: Path, rows: list[dict]) -> None:
    """Write the manifest CSV (UTF-8, ``\\n`` line ends, columns in contract order)."""
    columns = list(MANIFEST_COLUMNS) + (["mask"] if rows and "mask" in rows[0] else [])
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_jsonl(path: Path, records: list[dict]) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in records)
