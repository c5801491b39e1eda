"""Frame headers of compressed image codestreams (JPEG, JPEG-LS, JPEG 2000), read without decoding.

A compressed DICOM frame carries its own width and height, which need not agree
with the dataset's Rows / Columns: a 6 MB file can say 64 x 64 in its header and
hold a 40,000 x 40,000 JPEG. :mod:`medmodal.data.images` reads the frame header
here and refuses a mismatch (or an oversized frame) before any decoder allocates
the raster.

Why not Pillow's lazy ``Image.open``: it refuses 12- and 16-bit JPEG headers
(``cannot handle 12-bit layers``), which are exactly the DICOM frames whose
size must still be known, and it does not read JPEG-LS. pydicom's own parser is
private API. The formats are simple: JPEG (ISO/IEC 10918-1 B.2) and JPEG-LS
(ISO/IEC 14495-1) share the SOF segment layout; JPEG 2000 (ISO/IEC 15444-1 A.5.1)
puts the size in the SIZ segment, optionally inside a JP2 file's ``jp2c`` box.
"""

from __future__ import annotations

import struct
from typing import NamedTuple


class FrameHeader(NamedTuple):
    """Size and sample layout of an encoded frame, as its own header states them."""

    height: int
    width: int
    precision: int  # bits per sample
    components: int  # samples per pixel
    codec: str  # "jpeg", "jpeg-ls" or "jpeg2000"


# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 (F7) is JPEG-LS.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_LS_SOF = 0xF7
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RST0-7, SOI: no length field
_SOS = 0xDA
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0c\x6a\x50\x20\x20"


def frame_header(data: bytes) -> FrameHeader | None:
    """The header of a JPEG, JPEG-LS or JPEG 2000 (codestream or JP2) frame; None if not one of them."""
    if data[:2] == b"\xff\xd8":
        return jpeg_header(data)
    if data[:4] == _J2K_SOC_SIZ or data[:8] == _JP2_SIGNATURE:
        return jpeg2000_header(data)
    return None


def jpeg_header(data: bytes) -> FrameHeader | None:
    """SOF segment of a JPEG / JPEG-LS stream: walks the marker segments up to the first SOF.

    Returns None when the stream does not start with SOI, reaches the scan (SOS) or
    its end before a SOF, or a segment runs past the end.
    """
    if data[:2] != b"\xff\xd8":
        return None
    offset, end = 2, len(data)
    while offset + 4 <= end:
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte before a marker
            offset += 1
            continue
        if marker in _STANDALONE:
            offset += 2
            continue
        if marker == _SOS:
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if length < 2:
            return None
        if marker in _JPEG_SOF or marker == _JPEG_LS_SOF:
            if offset + 10 > end:
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, offset + 4)
            codec = "jpeg-ls" if marker == _JPEG_LS_SOF else "jpeg"
            return FrameHeader(height, width, precision, components, codec)
        offset += 2 + length
    return None


def jpeg2000_header(data: bytes) -> FrameHeader | None:
    """SIZ segment of a JPEG 2000 codestream (or of the ``jp2c`` box of a JP2 file)."""
    start = _jp2_codestream_offset(data) if data[:8] == _JP2_SIGNATURE else 0
    if start is None or data[start : start + 4] != _J2K_SOC_SIZ:
        return None
    siz = start + 2  # the SIZ marker
    if siz + 42 > len(data):
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", data, siz + 6)
    (components,) = struct.unpack_from(">H", data, siz + 38)
    precision = (data[siz + 40] & 0x7F) + 1
    if xsiz <= xosiz or ysiz <= yosiz:
        return None
    return FrameHeader(ysiz - yosiz, xsiz - xosiz, precision, components, "jpeg2000")


def _jp2_codestream_offset(data: bytes) -> int | None:
    """Start of the contiguous codestream box (``jp2c``) of a JP2 file."""
    offset, end = 0, len(data)
    while offset + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if length == 1:  # 64-bit length follows the box type
            if offset + 16 > end:
                return None
            (length,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        if kind == b"jp2c":
            return offset + header
        if length == 0 or length < header:  # 0 = box runs to the end; nothing follows it
            return None
        offset += length
    return None
