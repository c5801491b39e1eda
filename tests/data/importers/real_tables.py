"""Real label tables from the torchxrayvision wheel, and tiny image fixtures named as the releases name them.

The wheel (``.cache/wheels/torchxrayvision-*.whl``, fetched ``--no-deps`` by ``make setup``)
carries the label tables of NIH, CheXpert, PadChest, RSNA, SIIM and VinBigData without
their images. Tests that need it skip with a reason when it is absent.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

CHECKOUT = Path(__file__).resolve().parents[3]
WHEELS = sorted((CHECKOUT / ".cache" / "wheels").glob("torchxrayvision-*.whl"))
needs_wheel = pytest.mark.skipif(
    not WHEELS,
    reason="torchxrayvision wheel not in .cache/wheels (make setup fetches it; it holds the real tables)",
)
REAL_IMAGES = Path(
    os.environ.get("MEDMODAL_REAL_IMAGES", CHECKOUT.parent / "shared" / "data" / "real-images")
)
needs_real_images = pytest.mark.skipif(
    not (REAL_IMAGES / "nih1000-64px").is_dir(),
    reason=f"real radiographs not found at {REAL_IMAGES} (MEDMODAL_REAL_IMAGES)",
)


def wheel_member(name: str) -> bytes:
    """The bytes of ``torchxrayvision/data/<name>`` in the wheel."""
    with zipfile.ZipFile(WHEELS[-1]) as wheel:
        return wheel.read(f"torchxrayvision/data/{name}")


def write_member(name: str, dest: Path) -> Path:
    """The whole table, written to ``dest`` (compressed as in the wheel)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(wheel_member(name))
    return dest


def read_member(name: str, nrows: int | None = None) -> pd.DataFrame:
    """A wheel table as str cells (first ``nrows`` rows), read independently of the importers."""
    compression = "zip" if name.endswith(".zip") else "gzip"
    return pd.read_csv(io.BytesIO(wheel_member(name)), dtype=str, keep_default_na=False, nrows=nrows,
                       compression=compression)  # fmt: skip


def write_image(path: Path, size: int = 64, value: int = 100) -> Path:
    """A small grey PNG / JPEG (by suffix) at ``path``: a stand-in for a release image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size), value, np.uint8)
    pixels[: size // 2] = 200  # not constant
    Image.fromarray(pixels).save(path)
    return path


def write_source(folder: Path, table: str, text: str, images: Iterable[str], size: int = 64) -> Path:
    """A release folder: ``folder/table`` holding ``text`` and a stand-in ``folder/<name>.png`` per image."""
    (folder / table).write_text(text)
    for name in images:
        write_image(folder / f"{name}.png", size=size)
    return folder


def problem_cells(result) -> set[tuple[int, str]]:
    """``(row, field)`` of each bad source row an import left out."""
    return {(p.row, p.field) for p in result.problems}
