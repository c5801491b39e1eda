"""Hostile image files: decompression bombs (PNG, JPEG, DICOM frame, deflated DICOM), foreign formats,
decoder failures. Each is refused by name before a large allocation, without a traceback in the logs."""

from __future__ import annotations

import io
import logging
import time

import numpy as np
import PIL.Image
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from medmodal.data.images import DEFAULT_MAX_PIXELS, ImageReadError, check_image, load_image

from .fixtures import gradient, write_png
from .hostile_files import gray_dicom, jpeg_bytes, png_claiming, with_jpeg_size


@pytest.fixture
def no_pillow_decoding(monkeypatch):
    """Fail the test if anything asks Pillow to open an image (pydicom's Pillow plugin included)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened for decoding")

    monkeypatch.setattr(PIL.Image, "open", refuse)


def read_both(path, **kwargs) -> list[ImageReadError]:
    errors = []
    for read in (check_image, load_image):
        with pytest.raises(ImageReadError) as caught:
            read(path, **kwargs)
        errors.append(caught.value)
    return errors


# ------------------------------------------------------------------ DICOM frame bombs
def test_dicom_whose_jpeg_frame_differs_from_rows_columns_is_refused(tmp_path):
    frame = jpeg_bytes(gradient(256, 256))
    path = gray_dicom(tmp_path / "lying.dcm", 64, 64, pixel_data=frame, syntax=JPEGBaseline8Bit)
    for err in read_both(path):
        assert "256 x 256" in err.reason and "Rows / Columns say 64 x 64" in err.reason


def test_dicom_jpeg_bomb_is_refused_from_the_frame_header(tmp_path, no_pillow_decoding):
    """Header 64 x 64, JPEG frame claiming 40,000 x 40,000 (the issue's 19 s / 5.4 GB case)."""
    frame = with_jpeg_size(jpeg_bytes(gradient(64, 64)), 40_000, 40_000)
    path = gray_dicom(tmp_path / "bomb.dcm", 64, 64, pixel_data=frame, syntax=JPEGBaseline8Bit)
    started = time.perf_counter()
    for err in read_both(path):
        assert "40000 x 40000" in err.reason
    assert time.perf_counter() - started < 5.0


def test_dicom_rows_columns_beyond_the_budget_are_refused_before_decoding(tmp_path, no_pillow_decoding):
    frame = with_jpeg_size(jpeg_bytes(gradient(64, 64)), 40_000, 40_000)
    path = gray_dicom(tmp_path / "big.dcm", 40_000, 40_000, pixel_data=frame, syntax=JPEGBaseline8Bit)
    for err in read_both(path):
        assert "more than the limit" in err.reason and f"{DEFAULT_MAX_PIXELS:,}" in err.reason


def test_dicom_budget_is_a_parameter(tmp_path):
    path = gray_dicom(tmp_path / "a.dcm", 40, 60, pixel_data=gradient(40, 60).tobytes())
    assert load_image(path).shape == (40, 60)
    for err in read_both(path, max_pixels=40 * 60 - 1):
        assert "more than the limit of 2,399" in err.reason


def test_deflated_dicom_that_inflates_beyond_the_budget_is_refused(tmp_path):
    """Rows / Columns within the budget, but the deflated dataset inflates to 8 MB of pixel data."""
    zeros = np.zeros((2048, 2048), np.uint16).tobytes()  # deflates to a few kB
    path = gray_dicom(tmp_path / "deflate.dcm", 64, 64, pixel_data=zeros,
                      syntax=DeflatedExplicitVRLittleEndian, bits=16)  # fmt: skip
    assert path.stat().st_size < 100_000
    for err in read_both(path, max_pixels=100_000):
        assert "inflates to more than" in err.reason


def test_deflated_dicom_within_the_budget_reads(tmp_path):
    pixels = (gradient(300, 200).astype(np.uint16) * 16).tobytes()
    path = gray_dicom(tmp_path / "deflate.dcm", 300, 200, pixel_data=pixels,
                      syntax=DeflatedExplicitVRLittleEndian, bits=16)  # fmt: skip
    image = load_image(path)
    assert image.shape == (300, 200) and image.min() == 0.0 and image.max() == 1.0


# -------------------------------------------------------------------- PNG / JPEG bombs
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_header_beyond_the_budget_is_refused_unread(tmp_path):
    path = png_claiming(tmp_path / "bomb.png", 100_000, 100_000)  # refused by Pillow's own guard
    started = time.perf_counter()
    for err in read_both(path):
        assert "decompression-bomb limit" in err.reason and "10000000000 pixels" in err.reason
    path = png_claiming(tmp_path / "big.png", 10_000, 10_000)  # between Pillow's warning and error
    for err in read_both(path):
        assert "10000 x 10000" in err.reason and "more than the limit" in err.reason
    assert time.perf_counter() - started < 5.0


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_jpeg_header_beyond_the_budget_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.jpg"
    path.write_bytes(with_jpeg_size(jpeg_bytes(gradient(64, 64)), 12_000, 12_000))
    for err in read_both(path):
        assert "12000 x 12000" in err.reason and "more than the limit" in err.reason


def test_png_budget_is_a_parameter(tmp_path):
    path = write_png(tmp_path / "a.png", gradient(40, 60))
    for err in read_both(path, max_pixels=100):
        assert "40" in err.reason and "more than the limit of 100" in err.reason


def test_pillow_guard_stays_on():
    assert PIL.Image.MAX_IMAGE_PIXELS is not None


# --------------------------------------------------------------------- other formats
def test_formats_other_than_png_jpeg_tiff_are_not_handed_to_pillow(tmp_path):
    """EPS would start Ghostscript; GIF / BMP etc. are not radiology formats."""
    eps = tmp_path / "x.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    gif = tmp_path / "y.png"
    Image.fromarray(gradient(8, 8)).save(gif, format="GIF")
    for path in (eps, gif):
        for err in read_both(path):
            assert "not a recognised image format" in err.reason


# ------------------------------------------------------------ decoder failures, logs
def test_12_bit_jpeg_dicom_is_a_clean_error_without_traceback(caplog):
    caplog.set_level(logging.DEBUG)
    path = get_testdata_file("JPGExtended.dcm")
    for err in read_both(path):
        assert "12-bit" in err.reason and "pylibjpeg" in err.reason
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_corrupt_jpeg_frame_is_a_clean_error_without_traceback(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    frame = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))
    sos = frame.index(b"\xff\xda")
    corrupt = frame[: sos + 40]  # the scan cut short, no end marker
    path = gray_dicom(tmp_path / "corrupt.dcm", 64, 64, pixel_data=corrupt, syntax=JPEGBaseline8Bit)
    with pytest.raises(ImageReadError) as caught:
        load_image(path)
    assert "corrupt.dcm" in str(caught.value)
    assert not [r for r in caplog.records if r.exc_info]


def test_good_compressed_dicom_still_reads():
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    image = load_image(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert image.shape == (ds.Rows, ds.Columns) and 0.0 <= image.min() < image.max() <= 1.0


@pytest.mark.filterwarnings("ignore")
def test_randomly_corrupted_images_fail_cleanly(tmp_path, caplog):
    """240 seeded byte-level corruptions of PNG, JPEG, native and JPEG-compressed DICOM: each decodes to
    a valid [0, 1] array or raises ImageReadError; nothing else escapes and no traceback is logged."""
    import random

    caplog.set_level(logging.DEBUG)
    noise = np.random.default_rng(0).integers(0, 255, (48, 40), np.uint8)
    png = io.BytesIO()
    Image.fromarray(noise).save(png, format="PNG")
    jpeg = jpeg_bytes(noise)
    sources = {
        ".png": png.getvalue(),
        ".jpg": jpeg,
        ".dcm": gray_dicom(tmp_path / "n.dcm", 48, 40, pixel_data=noise.tobytes()).read_bytes(),
        "-j.dcm": gray_dicom(
            tmp_path / "j.dcm", 48, 40, pixel_data=jpeg, syntax=JPEGBaseline8Bit
        ).read_bytes(),
    }
    rng = random.Random(1)
    refused = 0
    for suffix, data in sources.items():
        for case in range(60):
            corrupt = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(corrupt))
                if rng.random() < 0.7:
                    corrupt[i] = rng.randrange(256)
                else:
                    del corrupt[i : i + rng.randint(1, 64)]
            path = tmp_path / f"{case}{suffix}"
            path.write_bytes(bytes(corrupt))
            try:
                image = load_image(path)
                assert (
                    image.dtype == np.float32 and image.ndim == 2 and 0.0 <= image.min() <= image.max() <= 1.0
                )
            except ImageReadError as err:
                assert err.path == str(path)
                refused += 1
    assert refused > 60
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
