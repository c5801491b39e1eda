"""Fitted baselines on disk without pickle: ``baseline.json`` (metadata) + ``baseline.npz`` (arrays).

Run folders are shared, so reading one must never run code or exhaust memory: the JSON is
plain ``json``; the arrays are read with ``allow_pickle=False`` (object arrays refused) after
each member's header is checked: a plain numeric dtype and at most :data:`MAX_ARRAY_BYTES`
per array and :data:`MAX_TOTAL_BYTES` in all (a compressed member cannot inflate past them).
Files larger than :data:`MAX_JSON_BYTES` are refused before reading.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medmodal.errors import RunError
from medmodal.runs import write_json_atomic

FORMAT = 1
MAX_JSON_BYTES = 512 * 2**20
MAX_ARRAY_BYTES = 2 * 2**30
MAX_TOTAL_BYTES = 4 * 2**30


class BaselineStateError(RunError, ValueError):
    """A stored baseline that cannot be read safely (corrupt, too large, or not one of ours)."""


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` atomically (numeric arrays only)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype.kind not in "fiub":
            raise TypeError(f"array '{key}': only numeric arrays are stored, got {np.asarray(value).dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(fd)
    try:
        # Any: mypy checks a **dict against every keyword, allow_pickle (bool) included.
        named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez_compressed(tmp, **named)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read a ``.npz`` written by :func:`save_arrays`, checking every header before any data."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = 0
            for info in archive.infolist():
                with archive.open(info) as fh:
                    shape, dtype = _header(fh, f"{path}: {info.filename}")
                size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if size > MAX_ARRAY_BYTES:
                    raise BaselineStateError(
                        f"{path}: {info.filename}: {size} bytes, more than {MAX_ARRAY_BYTES}"
                    )
                total += size
            if total > MAX_TOTAL_BYTES:
                raise BaselineStateError(f"{path}: {total} bytes of arrays, more than {MAX_TOTAL_BYTES}")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise BaselineStateError(f"{path}: not a readable array archive ({err})") from None


def _header(fh, where: str) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy

    try:
        version = npy.read_magic(fh)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(fh)
    except ValueError as err:
        raise BaselineStateError(f"{where}: not a numpy array ({err})") from None
    if dtype.kind not in "fiub" or dtype.hasobject:
        raise BaselineStateError(f"{where}: dtype {dtype} is not a plain numeric type")
    return tuple(int(n) for n in shape), dtype


def save_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, {"format": FORMAT, **data})


def load_json(path: Path) -> dict[str, Any]:
    """Read a baseline JSON (size-limited; format checked)."""
    if path.stat().st_size > MAX_JSON_BYTES:
        raise BaselineStateError(f"{path}: larger than {MAX_JSON_BYTES} bytes")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise BaselineStateError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BaselineStateError(f"{path}: not a medmodal baseline state (format {FORMAT} expected)")
    return data
