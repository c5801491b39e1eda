"""``generate_dataset``: write a synthetic chest radiograph data set in the manifest contract."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from medmodal.data.qa import QA_FILE, write_qa
from medmodal.data.synthetic.cohort import CohortSpec, sample_cohort
from medmodal.data.synthetic.latent import StudyLatent
from medmodal.data.synthetic.qa import questions_for_studies
from medmodal.data.synthetic.render import render_study
from medmodal.data.synthetic.report import write_report
from medmodal.data.synthetic.sites import default_sites
from medmodal.data.synthetic.vocabulary import LABELS
from medmodal.data.synthetic.writers import (
    ground_truth_record,
    manifest_row,
    write_image,
    write_jsonl,
    write_manifest,
    write_mask,
)
from medmodal.errors import OutputExistsError
from medmodal.version import __version__

GENERATOR = "medmodal.data.synthetic"
OUTPUT_FILES = ("manifest.csv", "ground_truth.jsonl", "labels.json", "summary.json", QA_FILE)
OUTPUT_DIRS = ("images", "masks")
MONOCHROME1_SHARE = 0.3  # of the DICOM images


def generate_dataset(
    out_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    image_size: int = 128,
    n_sites: int = 3,
    masks: bool = True,
    dicom_fraction: float = 0.0,
    progress: bool = False,
    *,
    prevalence: Mapping[str, float] | None = None,
    subtle_fraction: float = 0.38,
    severity_scale: float = 1.0,
    conspicuity_scale: float = 1.0,
    overwrite: bool = False,
) -> dict:
    """Generate ``n`` synthetic chest radiograph studies with reports and full ground truth.

    Writes into ``out_dir``: ``manifest.csv`` (dataset contract), ``images/``
    (8-bit PNG, or DICOM for a ``dicom_fraction`` share), ``masks/`` (label maps,
    if ``masks``), ``ground_truth.jsonl`` (latent variables per study),
    ``labels.json`` (label order), ``qa.jsonl`` (question-answer pairs from the ground
    truth, :mod:`.qa`) and ``summary.json``. The same arguments give
    byte-identical files.

    ``prevalence`` overrides the target prevalence of some labels (the rest keep
    their defaults); ``subtle_fraction`` is the share of present findings drawn
    subtle; ``severity_scale`` / ``conspicuity_scale`` (<= 1) make every finding smaller /
    fainter (named settings: :data:`~medmodal.data.synthetic.presets.PRESETS`). ``overwrite`` replaces a data set previously written by this function
    in ``out_dir``; any other non-empty folder is refused.

    Returns a summary: counts per label, site, split and image format, and the output paths.
    """
    _check_arguments(n, image_size, dicom_fraction)
    root = Path(out_dir)
    _prepare_output(root, overwrite, masks)
    spec = CohortSpec(
        prevalence={**CohortSpec().prevalence, **(prevalence or {})},
        subtle_fraction=subtle_fraction,
        severity_scale=severity_scale,
        conspicuity_scale=conspicuity_scale,
    )
    studies = assign_image_formats(
        sample_cohort(n, seed, default_sites(n_sites, seed), spec), dicom_fraction, seed
    )

    rows, records = [], []
    for study in tqdm(studies, desc="synthesising studies", unit="study", disable=not progress):
        rendering = render_study(study, image_size)
        report = write_report(study)
        image = write_image(root, study, rendering.image)
        mask = write_mask(root, study, rendering.label_map) if masks else None
        rows.append(manifest_row(study, report, rendering, image, mask))
        records.append(ground_truth_record(study, report, rendering))

    write_manifest(root / "manifest.csv", rows)
    write_jsonl(root / "ground_truth.jsonl", records)
    write_qa(root / QA_FILE, questions_for_studies(studies))
    (root / "labels.json").write_text(json.dumps(list(LABELS)) + "\n")
    parameters = {
        "n": n,
        "seed": seed,
        "image_size": image_size,
        "n_sites": n_sites,
        "masks": masks,
        "dicom_fraction": dicom_fraction,
        "prevalence": dict(spec.prevalence),
        "subtle_fraction": subtle_fraction,
        "severity_scale": severity_scale,
        "conspicuity_scale": conspicuity_scale,
    }
    summary = summarise(studies, parameters, masks)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    summary["paths"] = {name: str((root / rel).resolve()) for name, rel in summary["paths"].items()}
    return summary


def assign_image_formats(studies: list[StudyLatent], dicom_fraction: float, seed: int) -> list[StudyLatent]:
    """Mark ``round(dicom_fraction * n)`` random studies as DICOM (30% of those MONOCHROME1)."""
    rng = np.random.default_rng([seed, 3])
    n_dicom = round(dicom_fraction * len(studies))
    chosen = set(rng.permutation(len(studies))[:n_dicom].tolist())
    out = []
    for index, study in enumerate(studies):
        image_format = "png"
        if index in chosen:
            image_format = "dicom-monochrome1" if rng.random() < MONOCHROME1_SHARE else "dicom-monochrome2"
        out.append(replace(study, image_format=image_format))
    return out


def summarise(studies: list[StudyLatent], parameters: dict, masks: bool) -> dict:
    """Counts per label (all / subtle), site, split and image format, and the relative output paths."""
    label_counts = Counter(label for s in studies for label in s.labels)
    subtle_counts = Counter(f.label for s in studies for f in s.findings if f.subtle)
    paths = {
        "manifest": "manifest.csv",
        "ground_truth": "ground_truth.jsonl",
        "labels": "labels.json",
        "summary": "summary.json",
        "images": "images",
    }
    if masks:
        paths["masks"] = "masks"
    return {
        "generator": GENERATOR,
        "version": __version__,
        "parameters": parameters,
        "n_studies": len(studies),
        "n_patients": len({s.patient_id for s in studies}),
        "labels": {label: label_counts[label] for label in LABELS},
        "subtle": {label: subtle_counts[label] for label in LABELS},
        "no_finding": sum(1 for s in studies if not s.findings),
        "sites": dict(sorted(Counter(s.site for s in studies).items())),
        "splits": {split: sum(1 for s in studies if s.split == split) for split in ("train", "val", "test")},
        "image_formats": dict(sorted(Counter(s.image_format for s in studies).items())),
        "paths": paths,
    }


def _check_arguments(n: int, image_size: int, dicom_fraction: float) -> None:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    if not 0.0 <= dicom_fraction <= 1.0:
        raise ValueError(f"dicom_fraction must be between 0 and 1, got {dicom_fraction}")


def _prepare_output(root: Path, overwrite: bool, masks: bool) -> None:
    """Create the output folders; refuse a non-empty folder unless it is a previous synthetic data set."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{root} is not empty; pass overwrite=True to replace a previous synthetic data set"
            )
        if not _is_synthetic_dataset(root):
            raise OutputExistsError(
                f"{root} is not empty and holds no synthetic data set ({GENERATOR}); not touching it"
            )
        for name in OUTPUT_DIRS:
            shutil.rmtree(root / name, ignore_errors=True)
        for name in OUTPUT_FILES:
            (root / name).unlink(missing_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if masks:
        (root / "masks").mkdir(exist_ok=True)


def _is_synthetic_dataset(root: Path) -> bool:
    try:
        return json.loads((root / "summary.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False
