"""decode_image: arrays, Pillow images and pydicom Datasets follow the rules of image files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medmodal.data.images import ImageReadError, decode_image, read_image


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 3), (40, 50, 4)])
def test_uint8_array_pil_image_and_png_decode_alike(tmp_path, shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    from_file = read_image(path)
    for source in (pixels, Image.fromarray(pixels), Image.open(path)):
        decoded = decode_image(source)
        assert decoded.size == from_file.size == (40, 50)
        np.testing.assert_array_equal(decoded.pixels, from_file.pixels)


def test_16bit_array_is_min_max_scaled_like_a_16bit_png(tmp_path):
    pixels = np.random.default_rng(1).integers(1000, 4000, size=(32, 24), dtype=np.uint16)
    path = tmp_path / "image.png"
    Image.fromarray(pixels).save(path)
    decoded = decode_image(pixels)
    np.testing.assert_allclose(decoded.pixels, read_image(path).pixels, atol=1e-7)
    assert decoded.pixels.min() == 0.0 and decoded.pixels.max() == 1.0


def test_dicom_dataset_decodes_as_its_file():
    path = get_testdata_file("CT_small.dcm")
    np.testing.assert_array_equal(decode_image(pydicom.dcmread(path)).pixels, read_image(path).pixels)


def test_dicom_dataset_gets_the_pixel_budget_of_files():
    with pytest.raises(ImageReadError, match="more than the limit"):
        decode_image(pydicom.dcmread(get_testdata_file("CT_small.dcm")), max_pixels=100)


def test_dicom_dataset_without_pixels_is_refused():
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    with pytest.raises(ImageReadError, match="no pixel data"):
        decode_image(ds)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((3, 40, 50), dtype=np.uint8), "expected"),
        (np.zeros((40, 50, 3), dtype=np.float32), "must be uint8"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((0, 5), dtype=np.uint8), "empty image size"),
    ],
)
def test_bad_arrays_are_refused_with_the_reason(source, message):
    with pytest.raises(ImageReadError, match=message):
        decode_image(source)


def test_large_array_and_pil_image_are_refused_before_decoding():
    with pytest.raises(ImageReadError, match="more than the limit"):
        decode_image(np.zeros((20, 20), dtype=np.uint8), max_pixels=100)
    with pytest.raises(ImageReadError, match="more than the limit"):
        decode_image(Image.new("L", (20, 20)), max_pixels=100)


def test_pil_image_of_another_format_is_refused(tmp_path):
    path = tmp_path / "image.bmp"
    Image.new("L", (8, 8)).save(path)
    with pytest.raises(ImageReadError, match="BMP is not read"):
        decode_image(Image.open(path))


def test_other_objects_are_a_type_error():
    with pytest.raises(TypeError, match="numpy array, PIL image or pydicom Dataset"):
        decode_image(b"not an image")
