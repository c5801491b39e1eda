"""Hostile image files for the robustness tests: lying headers, decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def with_jpeg_size(data: bytes, height: int, width: int) -> bytes:
    """``data`` with its SOF0 header claiming ``height`` x ``width`` (the scan is unchanged)."""
    patched = bytearray(data)
    struct.pack_into(">HH", patched, patched.index(b"\xff\xc0") + 5, height, width)
    return bytes(patched)


def gray_dicom(
    path, rows: int, columns: int, *, pixel_data: bytes | None, syntax=ExplicitVRLittleEndian, bits=8
):
    """A MONOCHROME2 secondary-capture DICOM written to ``path`` (a file path or a binary buffer);
    ``pixel_data`` encapsulated for compressed syntaxes, None = no Pixel Data element."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit, ds.PixelRepresentation = bits - 1, 0
    if pixel_data is not None:
        ds.PixelData = encapsulate([pixel_data]) if syntax.is_compressed else pixel_data
    ds.save_as(path, enforce_file_format=True)
    return path


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(path, height: int, width: int):
    """A PNG whose IHDR (with a valid CRC) claims ``height`` x ``width``; almost no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = png_chunk
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path
