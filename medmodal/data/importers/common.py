"""What every table importer shares: its job (table, images, options), safe image lookup, manifest writing.

A source table is untrusted input: its cells are only ever looked up (file
names in an index of the image folder) or joined under the data folder after
refusing absolute paths and ``..`` parts, so a crafted cell cannot point the
manifest outside the folder the user named. Bad source rows become
:class:`~medmodal.data.types.RowProblem` records naming the file, the row
(spreadsheet numbering: header = row 1, first data row = row 2) and the field;
they are left out and reported, or raised all at once with ``strict``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypedDict

import pandas as pd
from typing_extensions import Unpack  # typing.Unpack is Python 3.11+; medmodal supports 3.10

from medmodal.data.images import ImageReadError, image_size
from medmodal.data.importers.tables import (
    MAX_LISTED_PROBLEMS,
    ImportFormatError,
    SourceTable,
    TableFormat,
    find_table,
)
from medmodal.data.manifest import Manifest, read_manifest
from medmodal.data.manifest_contract import CONTRACT_COLUMNS
from medmodal.data.types import RowProblem
from medmodal.errors import InputNotFoundError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "validate": "val", "test": "test", "testing": "test"}  # fmt: skip


@dataclass
class ImportResult:
    """What an importer wrote: counts, the source rows it left out, the manifest read back."""

    format: str
    manifest_path: Path
    source_rows: int  # rows read from the source table(s)
    rows_written: int  # manifest rows (studies)
    rows_with_image: int
    without_image: int  # studies left out: no image found and no report text
    problems: list[RowProblem]  # bad source rows, left out
    manifest: Manifest = field(repr=False)
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable counts, the first bad rows and the manifest's own summary."""
        return {
            "format": self.format,
            "manifest_path": str(self.manifest_path),
            "source_rows": self.source_rows,
            "rows_written": self.rows_written,
            "rows_with_image": self.rows_with_image,
            "left_out_without_image": self.without_image,
            "bad_source_rows": len({(p.file, p.row) for p in self.problems}),
            "first_problems": [str(p) for p in self.problems[:MAX_LISTED_PROBLEMS]],
            **self.notes,
            "manifest": self.manifest.summary(),
        }


# ------------------------------------------------------------------------- cells
def label_name(text: str) -> str:
    """A finding name as a manifest label: lower case, words joined by ``_`` (``Pleural Effusion`` -> ``pleural_effusion``)."""
    return "_".join(re.findall(r"[0-9a-z]+", text.lower()))


def split_from_folders(path: str | os.PathLike) -> str:
    """``train`` / ``val`` / ``test`` from the nearest parent folder named like one (``valid`` -> ``val``), else ``""``."""
    for part in reversed(PurePosixPath(Path(path).as_posix()).parent.parts):
        if part.lower() in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[part.lower()]
    return ""


# ------------------------------------------------------------------------- images
class ImageFolder:
    """Finds a source's image files under one root and turns them into manifest cells.

    ``by_name`` indexes the folder once (recursively) by file name and by stem,
    for tables that name images without their folder (NIH: ``00000001_000.png``
    spread over ``images_001/images/`` ... ``images_012/images/``).
    ``relative`` joins a table's relative path under the root, refusing
    absolute paths and ``..`` so that no cell reaches outside it; files reached through a
    symlink that leads out of the root are not found either way.
    With ``copy``, referenced images are copied into ``OUT/images/`` (same
    relative layout) and the manifest points at the copies.
    """

    def __init__(self, root: str | os.PathLike, out_dir: Path, *, copy: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputNotFoundError(f"image folder not found: {self.root}")
        self.out_dir = out_dir
        self.copy = copy
        self._real_root = Path(os.path.realpath(self.root))
        self._index: dict[str, Path] | None = None

    def _names(self) -> dict[str, Path]:
        if self._index is None:
            index: dict[str, Path] = {}
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    path = Path(dirpath) / name
                    if name.lower().endswith(IMAGE_SUFFIXES) and self._inside(path):
                        index.setdefault(name, path)
                        index.setdefault(Path(name).stem, path)
            self._index = index
        return self._index

    def all_images(self) -> list[Path]:
        """Every image file under the root, sorted."""
        return sorted(set(self._names().values()))

    def by_name(self, name: str) -> Path | None:
        """The image called ``name`` (with or without its suffix) anywhere under the root."""
        return self._names().get(name) if name else None

    def relative(self, relative: str) -> Path | None:
        """``root / relative`` if it is an existing file and ``relative`` stays inside the root."""
        parts = PurePosixPath(relative.replace("\\", "/")).parts
        if not parts or parts[0] == "/" or ".." in parts or re.match(r"^[A-Za-z]:", relative):
            return None
        path = self.root.joinpath(*parts)
        return path if path.is_file() and self._inside(path) else None

    def _inside(self, path: Path) -> bool:
        """False for a symlink (file or folder on the way) that leads out of the root."""
        return Path(os.path.realpath(path)).is_relative_to(self._real_root)

    def cell(self, path: Path) -> str:
        """The manifest ``image`` cell of ``path``: relative to the manifest, after copying if asked."""
        if self.copy:
            target = self.out_dir / "images" / path.relative_to(self.root)
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            path = target
        return relative_to(path, self.out_dir)


def relative_to(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` (POSIX separators), or absolute on another drive."""
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def stored_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` of an image file from its header, or None if it cannot be read."""
    try:
        return image_size(path)
    except ImageReadError:
        return None


# ------------------------------------------------------------------------- writing
def scaled_boxes(boxes: Iterable[dict[str, Any]], sx: float, sy: float) -> list[dict[str, Any]]:
    """``{"label", "box", ...}`` entries with the box's x coordinates times ``sx`` and y times ``sy``."""
    return [
        {**b, "box": [b["box"][0] * sx, b["box"][1] * sy, b["box"][2] * sx, b["box"][3] * sy]} for b in boxes
    ]


def boxes_at_stored_size(boxes: list[dict[str, Any]], image: Path | None, release_size: int) -> str:
    """The ``boxes`` cell of boxes on the release's ``release_size``-px square grid, scaled to the stored
    image's size (read from its header, so downsampled copies get matching boxes).

    Empty without boxes or image; also when the image cannot be read (the manifest read-back names it).
    """
    if not boxes or image is None:
        return ""
    size = stored_size(image)
    if size is None:
        return ""
    return boxes_cell(scaled_boxes(boxes, size[1] / release_size, size[0] / release_size))


def boxes_cell(boxes: Iterable[dict[str, Any]]) -> str:
    """The manifest ``boxes`` JSON of ``{"label", "box", ...}`` entries (coordinates rounded to 0.01 px)."""
    entries = [{**b, "box": [round(float(v), 2) for v in b["box"]]} for b in boxes]
    return json.dumps(entries, separators=(",", ":")) if entries else ""


def write_import(
    format_name: str,
    rows: list[dict[str, Any]],
    out_dir: Path,
    *,
    source_rows: int,
    problems: list[RowProblem],
    strict: bool = False,
    check_images: bool = False,
    notes: dict[str, Any] | None = None,
) -> ImportResult:
    """Write ``out_dir/manifest.csv`` from ``rows`` and read it back with :func:`read_manifest`.

    Rows with neither an image nor report text are left out (counted). With
    ``strict``, any bad source row raises :class:`ImportFormatError` before
    anything is written.
    """
    problems = sorted(problems, key=lambda p: (p.file, p.row))
    if problems and strict:
        raise ImportFormatError(f"{format_name}: {len(problems)} bad source row(s) (strict)", problems)
    if problems:
        fields = Counter(p.field for p in problems)
        logger.warning("%s: left out %d bad source row(s) (by field: %s); first: %s", format_name,
                       len({(p.file, p.row) for p in problems}), dict(fields), problems[0])  # fmt: skip
    kept = [
        r
        for r in rows
        if r.get("image") or any(r.get(f) for f in ("indication", "findings", "impression", "report"))
    ]
    if not kept:
        raise ImportFormatError(
            f"{format_name}: none of the {len(rows)} studies has an image file or report text "
            "(check the image folder: --images)",
            problems,
        )
    columns = [c for c in CONTRACT_COLUMNS if any(c in r for r in kept)]
    columns += [c for c in dict.fromkeys(k for r in kept for k in r) if c not in columns]
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.csv"
    pd.DataFrame(kept, columns=columns).fillna("").to_csv(manifest_path, index=False)
    outside = images_outside(kept, out_dir)
    if outside:
        logger.warning("%s: %d image(s) are referenced in place outside %s; train with data.allow_outside_paths: "
                       "true (--allow-outside-paths), or import with --copy-images, or write OUT into the image "
                       "folder", format_name, outside, out_dir)  # fmt: skip
    manifest = read_manifest(manifest_path, check_images=check_images, allow_outside_paths=bool(outside))
    notes = {**(notes or {}), "images_outside_out": outside}
    return ImportResult(
        format=format_name,
        manifest_path=manifest_path,
        source_rows=source_rows,
        rows_written=len(kept),
        rows_with_image=sum(1 for r in kept if r.get("image")),
        without_image=len(rows) - len(kept),
        problems=problems,
        manifest=manifest,
        notes=notes,
    )


class TableOptions(TypedDict, total=False):
    """The keywords every table-driven format takes (``registry.TABLE_OPTIONS`` on the command line)."""

    images: str | os.PathLike | None  # folder with the images (default: the format's own place)
    copy_images: bool  # copy into OUT/images instead of referencing in place
    strict: bool  # any bad source row raises ImportFormatError
    check_images: bool  # decode every image when the manifest is read back


@dataclass(frozen=True)
class ImportJob:
    """One import's output folder, image lookup and strictness: how every format starts and ends."""

    format: str
    out: Path
    images: ImageFolder
    strict: bool = False
    check_images: bool = False

    @classmethod
    def start(
        cls,
        format_name: str,
        out_dir: str | os.PathLike,
        default_images: Path,
        *,
        images: str | os.PathLike | None = None,
        copy_images: bool = False,
        strict: bool = False,
        check_images: bool = False,
    ) -> ImportJob:
        """Images are looked up under ``images``, else under ``default_images``."""
        out = Path(out_dir)
        folder = ImageFolder(images if images is not None else default_images, out, copy=copy_images)
        return cls(format_name, out, folder, strict, check_images)

    @classmethod
    def with_table(
        cls,
        format_name: str,
        table: TableFormat,
        source: Path,
        out_dir: str | os.PathLike,
        **options: Unpack[TableOptions],
    ) -> tuple[ImportJob, SourceTable]:
        """The job of a one-table format and its table: ``source`` is the table or the folder holding it
        (:func:`find_table`); images are looked up under that folder unless ``images`` says otherwise."""
        path = find_table(source, table.patterns, table.what)
        job = cls.start(format_name, out_dir, folder_of(source), **options)
        return job, SourceTable.read(path, table.required)

    def finish(
        self,
        rows: list[dict[str, Any]],
        *,
        source_rows: int,
        problems: list[RowProblem],
        notes: dict[str, Any] | None = None,
    ) -> ImportResult:
        """Write the manifest (:func:`write_import`) with this job's strictness and image checks."""
        return write_import(self.format, rows, self.out, source_rows=source_rows, problems=problems,
                            strict=self.strict, check_images=self.check_images, notes=notes)  # fmt: skip


def folder_of(source: Path) -> Path:
    """The folder of a source given as a folder or as a file in it."""
    return source if source.is_dir() else source.parent


def images_outside(rows: Iterable[dict[str, Any]], out_dir: Path) -> int:
    """How many rows' ``image`` cells lead outside ``out_dir`` (referenced in place, not copied).

    The manifest reader refuses such paths unless ``allow_outside_paths`` is set; the
    import itself names the folder on purpose, so its read-back allows them and says so.
    """
    root = out_dir.resolve()
    return sum(1 for r in rows if r.get("image") and not (root / r["image"]).resolve().is_relative_to(root))
