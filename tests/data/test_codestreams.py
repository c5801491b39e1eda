"""Frame headers of JPEG / JPEG-LS / JPEG 2000 codestreams, checked against real encoders' output."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame

from medmodal.data.codestreams import FrameHeader, frame_header, jpeg2000_header, jpeg_header


def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def first_frame(name: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file(name))
    return get_frame(ds.PixelData, 0, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1))


@pytest.mark.parametrize("progressive", [False, True])
def test_pillow_jpeg_header(progressive):
    data = encoded(np.zeros((37, 91), np.uint8), "JPEG", progressive=progressive)
    assert frame_header(data) == FrameHeader(37, 91, 8, 1, "jpeg")


def test_jpeg2000_codestream_and_jp2_file():
    pixels = np.zeros((23, 45, 3), np.uint8)
    assert frame_header(encoded(pixels, "JPEG2000", no_jp2=True)) == FrameHeader(23, 45, 8, 3, "jpeg2000")
    assert frame_header(encoded(pixels, "JPEG2000")) == FrameHeader(23, 45, 8, 3, "jpeg2000")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("JPGExtended.dcm", FrameHeader(1024, 256, 12, 1, "jpeg")),
        ("MR_small_jpeg_ls_lossless.dcm", FrameHeader(64, 64, 16, 1, "jpeg-ls")),
        ("JPEG2000.dcm", FrameHeader(1024, 256, 16, 1, "jpeg2000")),
        ("SC_rgb_jpeg_dcmtk.dcm", FrameHeader(100, 100, 8, 3, "jpeg")),
    ],
)
def test_dicom_frames_match_their_rows_and_columns(name, expected):
    assert frame_header(first_frame(name)) == expected


def test_a_patched_size_is_what_the_header_says():
    """The parser reports the frame's own claim, which is what a decompression bomb inflates."""
    data = bytearray(encoded(np.zeros((8, 8), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 40_000, 40_000)
    assert jpeg_header(bytes(data)) == FrameHeader(40_000, 40_000, 8, 1, "jpeg")


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8", b"\xff\xd8\xff\xe0\x00", b"\xff\xd8\xff\xda\x00\x08", b"\xff\xd8\x00\x00\x00\x00",
     b"\xff\xd8\xff\xe0\x00\x01", b"\xff\x4f\xff\x51\x00", b"\x00\x00\x00\x0c\x6a\x50\x20\x20" + b"\x00" * 4,
     b"RIFF1234", bytes(range(256))],
)  # fmt: skip
def test_truncated_or_foreign_data_gives_none(data):
    assert frame_header(data) is None
    assert jpeg_header(data) is None
    assert jpeg2000_header(data) is None


def test_every_prefix_of_a_real_stream_parses_or_gives_none():
    data = encoded(np.zeros((16, 16), np.uint8), "JPEG")
    full = frame_header(data)
    for cut in range(len(data)):
        header = frame_header(data[:cut])
        assert header is None or header == full
