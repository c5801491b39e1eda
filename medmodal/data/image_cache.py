"""Decode-once on-disk cache of resized images for the raw-manifest path (``data.image_cache_dir``).

Every ``train`` / ``evaluate`` / benchmark cell on a raw manifest decodes and resizes each image
again. With ``data.image_cache_dir`` set, :class:`StudyDataset` first looks the image up here and
stores what it decoded, so the next process (another cell, a DataLoader worker, another rank)
reads ``S*S`` bytes instead of decoding a 4,000-pixel JPEG.

Key: SHA-256 of (resolved path, file size, modification time in ns, S, :data:`DECODE_VERSION`):
a changed file, another size or another decoding recipe is another entry. Entry file:
``ROOT/ab/abcdef....bin`` = magic ``MMIC1`` + H, W (uint32) + S (uint32) + ``S*S`` uint8 pixels;
an entry of the wrong length or magic is ignored (and rewritten). Writes go to a temporary file
in the same folder, then ``os.replace``: several processes may share one cache folder, a reader
never sees half an entry, and the last of two identical writes wins. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

DECODE_VERSION = "read_image(reduce_to=S) + antialiased bilinear resize + round to uint8, v1"
MAGIC = b"MMIC1"
_HEADER = struct.Struct("<III")  # H, W, S


class DecodedImageCache:
    """``get`` / ``put`` resized uint8 images by (file, size, settings) under ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def key(self, image: Path, size: int) -> str | None:
        """The entry name of ``image`` at side ``size``, or None when the file cannot be stat'ed."""
        try:
            info = os.stat(image)
        except OSError:
            return None
        text = f"{os.path.realpath(image)}\0{info.st_size}\0{info.st_mtime_ns}\0{size}\0{DECODE_VERSION}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.bin"

    def get(self, image: Path, size: int) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """``(uint8 [1, S, S], (H, W))`` if cached, else None."""
        key = self.key(image, size)
        if key is None:
            return None
        expected = len(MAGIC) + _HEADER.size + size * size
        try:
            with open(self._path(key), "rb") as handle:
                data = handle.read(expected + 1)
        except OSError:
            return None
        if len(data) != expected or not data.startswith(MAGIC):
            return None
        height, width, stored_size = _HEADER.unpack_from(data, len(MAGIC))
        if stored_size != size or height == 0 or width == 0:
            return None
        pixels = np.frombuffer(data, dtype=np.uint8, offset=len(MAGIC) + _HEADER.size).reshape(1, size, size)
        return torch.from_numpy(pixels.copy()), (int(height), int(width))

    def put(self, image: Path, size: int, entry: tuple[torch.Tensor, tuple[int, int]]) -> None:
        """Store ``entry`` (atomically); a cache that cannot be written is skipped silently."""
        key = self.key(image, size)
        if key is None:
            return
        pixels, (height, width) = entry
        data = (
            MAGIC + _HEADER.pack(height, width, size) + pixels.to(torch.uint8).contiguous().numpy().tobytes()
        )
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".bin")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            return
