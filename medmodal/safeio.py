"""Reading torch files that may come from someone else, without running their code.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects: a shared checkpoint whose
pickle calls ``os.system`` runs that command on load. :func:`load_torch_file` only ever uses
``weights_only=True`` (tensors, numbers, strings and plain containers) and turns every failure
into one clear error that names the file:

- :class:`UnsafeFileError`: the file holds other Python objects (code, classes); refused.
- :class:`UnreadableFileError`: truncated, empty, or not a torch file at all.

Memory: a ``torch.save`` archive (zip) is checked before loading: its entries must be stored
uncompressed (as ``torch.save`` writes them) and together no larger than the file, so a small
crafted file cannot inflate into gigabytes.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from medmodal.errors import InputNotFoundError, RunError, UnsafeFileError


class UnreadableFileError(RunError, ValueError):
    """A torch file that cannot be read: truncated, empty, or not a torch file."""


def load_torch_file(path: str | Path, what: str = "torch file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with clear errors.

    Args:
        path: the file.
        what: what the file should be, for the messages ("checkpoint", "weights file").

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: the file holds objects other than tensors and plain values.
        UnreadableFileError: truncated, empty, compressed beyond its size, or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{what} not found: {path}")
    check_archive(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err).lower():  # garbage or a foreign pickle stream, not a refused object
            raise UnreadableFileError(
                f"{path}: not a readable {what} (not a torch file): {_unsupported(err)}"
            ) from None
        raise UnsafeFileError(
            f"{path}: refused to load this {what}: it holds Python objects other than tensors and plain "
            f"values ({_unsupported(err)}), and unpickling them could run code. Use only {what}s written "
            "by medmodal, or re-save the weights as a plain state_dict of tensors."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError, KeyError) as err:
        raise UnreadableFileError(
            f"{path}: not a readable {what} (truncated or not a torch file): {_first_line(err)}"
        ) from None


def check_archive(path: Path, what: str) -> None:
    """Refuse a zip archive whose entries are compressed or add up to more than the file size."""
    if not zipfile.is_zipfile(path):
        return  # the legacy (non-zip) format: tensors are read straight from the file
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise UnreadableFileError(f"{path}: not a readable {what} (damaged archive): {err}") from None
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise UnreadableFileError(
            f"{path}: not a {what} written by torch.save (compressed entries, e.g. {compressed[0]}); refused"
        )
    total = sum(e.file_size for e in entries)
    if total > path.stat().st_size:
        raise UnreadableFileError(
            f"{path}: archive entries claim {total} bytes, more than the file's size; refused"
        )


def _unsupported(err: BaseException) -> str:
    """The line of torch's weights-only message naming the refused object (not its advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported" in line or "Trying to" in line:
            return line[:300]
    return lines[0][:300] if lines else type(err).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0][:300] if text else "") or type(err).__name__
