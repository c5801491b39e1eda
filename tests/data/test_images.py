"""Image decoding: PNG / JPEG via PIL, DICOM via pydicom (shipped test files)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medmodal.data.images import ImageReadError, check_image, image_size, is_dicom, load_image

from .fixtures import copy_pydicom_file, gradient, truncate, write_jpeg, write_png, write_rgb_dicom


# --------------------------------------------------------------------- PNG / JPEG
def test_png_8bit_is_value_over_255(tmp_path):
    pixels = gradient(40, 60)
    image = load_image(write_png(tmp_path / "a.png", pixels))
    assert image.dtype == np.float32 and image.shape == (40, 60)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-6)
    assert image_size(tmp_path / "a.png") == (40, 60)


def test_png_16bit_is_min_max_scaled(tmp_path):
    pixels = np.tile(np.linspace(1000, 4000, 50), (10, 1)).astype(np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    assert image.min() == 0.0 and image.max() == 1.0
    np.testing.assert_allclose(image[0], np.linspace(0, 1, 50), atol=1e-3)


def test_rgb_is_converted_to_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    np.testing.assert_allclose(load_image(tmp_path / "red.png"), round(0.299 * 255) / 255, atol=1 / 255)


def test_jpeg(tmp_path):
    pixels = gradient(64, 64)
    image = load_image(write_jpeg(tmp_path / "a.jpg", pixels))
    assert image.shape == (64, 64)
    assert np.abs(image - pixels / 255.0).mean() < 0.02
    assert check_image(tmp_path / "a.jpg") == (64, 64)


@pytest.mark.parametrize(("writer", "name"), [(write_png, "cut.png"), (write_jpeg, "cut.jpg")])
def test_truncated_files_fail_with_the_file_named(tmp_path, writer, name):
    noise = np.random.default_rng(0).integers(0, 255, (200, 200), np.uint8)
    path = truncate(writer(tmp_path / name, noise))
    for read in (load_image, check_image):
        with pytest.raises(ImageReadError) as caught:
            read(path)
        assert caught.value.path == str(path)
        assert str(path) in str(caught.value)
        assert "truncated" in caught.value.reason.lower()


def test_random_bytes_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        load_image(junk)
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        check_image(junk)
    with pytest.raises(ImageReadError, match="file not found"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageReadError, match="not a valid DICOM"):
        load_image(shutil.copy(junk, tmp_path / "junk.dcm"))


def test_image_read_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(ImageReadError("/x/a.png", "broken")))
    assert (err.path, err.reason, str(err)) == ("/x/a.png", "broken", "cannot read image /x/a.png: broken")


# -------------------------------------------------------------------------- DICOM
def raw(name: str) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(get_testdata_file(name))
    return ds, ds.pixel_array.astype(np.float64)


def test_dicom_window_from_the_file_is_applied():
    ds, stored = raw("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600, no rescale
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    expected = np.clip((stored - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # DICOM PS3.3 C.11.2.1.2 linear
    image = load_image(get_testdata_file("MR_small.dcm"))
    assert image.shape == (64, 64) and image.dtype == np.float32
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_dicom_rescale_then_window_in_hounsfield_units(tmp_path):
    ds, stored = raw("CT_small.dcm")
    hu = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    path = copy_pydicom_file("CT_small.dcm", tmp_path / "ct.dcm", WindowCenter=40, WindowWidth=400)
    image = load_image(path)
    assert np.all(image[hu <= 40 - 200] == 0.0)
    assert np.all(image[hu > 40 + 200] == 1.0)
    inside = (hu > -150) & (hu < 230)
    np.testing.assert_allclose(image[inside], (hu[inside] - 39.5) / 399 + 0.5, atol=1e-5)


def test_dicom_without_window_is_min_max_scaled():
    _, stored = raw("CT_small.dcm")
    image = load_image(get_testdata_file("CT_small.dcm"))
    np.testing.assert_allclose(image, (stored - stored.min()) / (stored.max() - stored.min()), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    plain_path = get_testdata_file("MR_small.dcm")
    inverted_path = copy_pydicom_file(
        "MR_small.dcm", tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1"
    )
    plain, inverted = load_image(plain_path), load_image(inverted_path)
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)
    darkest_in_plain = plain == plain.min()
    brightest_in_inverted = inverted == inverted.max()
    assert np.array_equal(darkest_in_plain, brightest_in_inverted)


def test_multiframe_dicom_gives_the_first_frame():
    path = get_testdata_file("rtdose.dcm")  # 15 frames of 10 x 10
    frames = pydicom.dcmread(path).pixel_array.astype(np.float64)
    assert frames.shape == (15, 10, 10)
    first = frames[0]
    image = load_image(path)
    assert image.shape == (10, 10)
    np.testing.assert_allclose(image, (first - first.min()) / (first.max() - first.min()), atol=1e-6)
    assert image_size(path) == (10, 10)


def test_compressed_dicom_decodes_like_the_uncompressed_one():
    np.testing.assert_allclose(
        load_image(get_testdata_file("MR_small_RLE.dcm")), load_image(get_testdata_file("MR_small.dcm"))
    )


def test_dicom_without_pixel_data(tmp_path):
    path = copy_pydicom_file("CT_small.dcm", tmp_path / "nopixels.dcm", PixelData=None)
    for read in (load_image, check_image):
        with pytest.raises(ImageReadError, match="no pixel data") as caught:
            read(path)
        assert caught.value.path == str(path)


def test_truncated_dicom_is_caught_by_the_cheap_check():
    path = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(ImageReadError, match="truncated"):
        check_image(path)
    with pytest.raises(ImageReadError):
        load_image(path)


def test_dicom_is_recognised_without_a_suffix(tmp_path):
    path = shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "IM0001")
    assert is_dicom(path)
    assert check_image(path) == (128, 128)
    assert load_image(path).shape == (128, 128)


def test_colour_dicom_is_converted_to_luma(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 255  # pure green
    path = write_rgb_dicom(tmp_path / "rgb.dcm", rgb)
    image = load_image(path)
    assert image.shape == (4, 5)
    np.testing.assert_allclose(image, 0.587, atol=1e-6)
