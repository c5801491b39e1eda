"""The import formats by name: what ``medmodal import FORMAT SRC OUT`` can read.

Each format is one module of this package with one ``import_<format>(source,
out_dir, **options)`` function; :data:`FORMATS` names it, says what ``SRC`` is and
lists its options (so the command line is built from here, and a new format is
one module plus one entry). Modules are imported only when their format is run.
"""

from __future__ import annotations

import importlib
import inspect
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One keyword of a format's import function, as a command-line flag."""

    flag: str  # "--uncertain"
    keyword: str  # "uncertain"
    help: str
    type: Callable[[str], Any] | None = str
    choices: tuple[str, ...] | None = None
    default: Any = None
    required: bool = False

    @property
    def is_switch(self) -> bool:
        return self.type is None  # a flag without a value (store_true)


IMAGES = Option("--images", "images", "folder with the images (searched recursively; default: SRC)")
COPY = Option(
    "--copy-images",
    "copy_images",
    "copy the images into OUT/images instead of referencing them in place",
    None,
)
STRICT = Option(
    "--strict", "strict", "stop at any bad source row (default: leave it out and report it)", None
)
CHECK = Option(
    "--check-images",
    "check_images",
    "decode every image when reading the manifest back (slow on big sets)",
    None,
)
TABLE_OPTIONS = (IMAGES, COPY, STRICT, CHECK)
UNCERTAIN = Option("--uncertain", "uncertain", "uncertain (-1) observations as: negative (U-Zeros, default) or "
                   "positive (U-Ones); always listed in the 'uncertain' column", choices=("negative", "positive"),
                   default="negative")  # fmt: skip


@dataclass(frozen=True)
class ImportFormat:
    """A registered format: its module and function, what SRC is, its options."""

    name: str
    summary: str
    source: str  # what SRC is
    module: str  # module of this package
    function: str
    options: tuple[Option, ...] = TABLE_OPTIONS

    def load(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(f"medmodal.data.importers.{self.module}"), self.function)

    def run(self, source: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> Any:
        """Import ``source`` into ``out_dir``; ``options`` by keyword (unknown ones are an error, ``None`` = default)."""
        known = {o.keyword for o in self.options}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"format {self.name!r} has no option(s) {unknown}; its options: {sorted(known)}")
        return self.load()(source, out_dir, **{k: v for k, v in options.items() if v is not None})


def accepted_keywords(function: Callable[..., Any]) -> set[str]:
    """The keywords ``function`` takes: its named parameters plus the keys of a ``**options: Unpack[TypedDict]``."""
    parameters = inspect.signature(function).parameters
    names = {n for n, p in parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    for name, hint in typing.get_type_hints(function, include_extras=True).items():
        if parameters.get(name) is not None and parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            (options,) = typing.get_args(hint)  # Unpack[TableOptions] -> TableOptions
            names |= set(typing.get_type_hints(options))
    return names


FORMATS: dict[str, ImportFormat] = {
    f.name: f
    for f in (
        ImportFormat(
            "openi",
            "Open-i / IU X-ray report XMLs (NLMCXR_reports.tgz), images NLMCXR_png optional",
            "NLMCXR_reports.tgz, a folder of the XMLs, or the torchxrayvision wheel",
            "openi",
            "import_openi",
            (
                Option(
                    "--images", "images_dir", "folder with the NLMCXR PNGs ({image_id}.png), if you have them"
                ),
            ),
        ),
        ImportFormat(
            "iu-xray",
            "IU X-ray in the report-generation layout: annotation.json + images/<id>/0.png (split kept)",
            "folder holding annotation.json and images/, or annotation.json",
            "iu_xray",
            "import_iu_xray",
            (
                *TABLE_OPTIONS,
                Option(
                    "--openi-reports",
                    "openi_reports",
                    "Open-i report XMLs (tgz / folder / wheel) to take MeSH labels from",
                ),
            ),
        ),
        ImportFormat(
            "nih",
            "NIH ChestX-ray14: Data_Entry_2017*.csv + BBox_List_2017.csv (boxes) + split lists",
            "release folder (Data_Entry_2017*.csv[.gz], BBox_List_2017.csv[.gz], *_list.txt) or the Data_Entry file",
            "nih",
            "import_nih",
            (
                *TABLE_OPTIONS,
                Option(
                    "--splits",
                    "splits",
                    "official (train_val_list / test_list), folders (parent folder named "
                    "train/val/test) or none",
                    choices=("official", "folders", "none"),
                    default="official",
                ),
                Option(
                    "--val-fraction",
                    "val_fraction",
                    "share of train_val patients put in val (official splits)",
                    float,
                ),
                Option("--seed", "seed", "seed of that choice", int),
                Option(
                    "--any-finding",
                    "any_finding",
                    "also label images with any finding so (e.g. abnormal: a "
                    "normal-vs-abnormal task with data.labels: [abnormal])",
                ),
            ),
        ),
        ImportFormat(
            "chexpert",
            "CheXpert: train.csv / valid.csv (+ images), uncertain-label policy",
            "release folder (CheXpert-v1.0[-small]) or one table",
            "chexpert",
            "import_chexpert",
            (*TABLE_OPTIONS, UNCERTAIN),
        ),
        ImportFormat(
            "mimic-cxr",
            "MIMIC-CXR-JPG 2.0: metadata / split / chexpert tables, files/, reports where present",
            "release folder with mimic-cxr-2.0.0-{metadata,split,chexpert}.csv[.gz]",
            "mimic_cxr",
            "import_mimic_cxr",
            (
                *TABLE_OPTIONS,
                UNCERTAIN,
                Option(
                    "--reports",
                    "reports",
                    "folder holding the MIMIC-CXR reports' files/pXX/pN/sM.txt (default: SRC)",
                ),
            ),
        ),
        ImportFormat(
            "vindr-cxr",
            "VinDr-CXR / VinBigData: boxes from several readers, merged per image, reader kept",
            "folder with the annotation table (annotations_train.csv / train.csv) or the table",
            "vindr",
            "import_vindr",
            (
                *TABLE_OPTIONS,
                Option("--min-readers", "min_readers", "readers who must mark a finding (default 1)", int),
            ),
        ),
        ImportFormat(
            "rsna-pneumonia",
            "RSNA Pneumonia Detection: stage_2_train_labels.csv boxes",
            "folder with stage_2_train_labels.csv[.zip] (and the DICOMs) or the table",
            "rsna_pneumonia",
            "import_rsna_pneumonia",
        ),
        ImportFormat(
            "siim-pneumothorax",
            "SIIM-ACR Pneumothorax: train-rle.csv -> mask PNGs + boxes",
            "folder with train-rle.csv (and the DICOMs) or the table",
            "siim",
            "import_siim",
        ),
        ImportFormat(
            "padchest",
            "PadChest: labels, Spanish report text kept as text",
            "folder with PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz] or the table",
            "padchest",
            "import_padchest",
        ),
        ImportFormat(
            "folder",
            "your own data: a folder of DICOM / PNG / JPEG images + a CSV of reports (+ labels)",
            "folder of images (searched recursively)",
            "folder",
            "import_folder",
            (
                Option(
                    "--reports",
                    "reports",
                    "CSV, one row per study: id, report (or indication / findings / "
                    "impression), optional image, patient_id, split, site, view, labels",
                ),
                Option(
                    "--labels",
                    "labels",
                    "label table from `medmodal label-reports` (id + one column per finding)",
                ),
                Option("--id-column", "id_column", "the id column of --reports (default: id)"),
                UNCERTAIN,
                COPY,
                STRICT,
                CHECK,
            ),
        ),
        ImportFormat(
            "vqa-rad",
            "VQA-RAD: question JSON + image folder -> manifest + qa.jsonl",
            "VQA_RAD Dataset Public.json (or trainset.json / testset.json)",
            "vqa_rad",
            "import_vqa_rad",
            (
                Option("--images", "images_dir", "folder with the VQA-RAD images", required=True),
                Option(
                    "--val-fraction",
                    "val_fraction",
                    "share of training images whose questions go to val (0.1)",
                    float,
                ),
                Option("--seed", "seed", "seed of that choice (0)", int),
            ),
        ),
    )
}


def available() -> list[str]:
    """The format names, as ``medmodal import --list`` shows them."""
    return list(FORMATS)


def get_format(name: str) -> ImportFormat:
    """The format called ``name``; the error lists the formats."""
    if name not in FORMATS:
        raise ValueError(f"unknown import format {name!r}; formats: {', '.join(FORMATS)}")
    return FORMATS[name]


def run_import(name: str, source: str | os.PathLike, out_dir: str | os.PathLike, **options: Any) -> Any:
    """``get_format(name).run(source, out_dir, **options)``; the result has ``summary()``."""
    return get_format(name).run(source, out_dir, **options)
