"""Real radiographs as they come: RGB / RGBA / grayscale PNG, large JPEG (reduced decoding), MONOCHROME1
16-bit CR DICOM with a window, JPEG-compressed CR DICOM; plus EXIF orientation and transparency, which
the real set lacks, on small made-up files. The real files live in ../shared/data/real-images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medmodal.data.images import check_image, image_size, load_image, read_image
from medmodal.data.manifest import ManifestError, read_manifest

from .fixtures import gradient

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real-images"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real images not present at {REAL}")
XRV = REAL / "torchxrayvision-tests"


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(pixels))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True)[0, 0].numpy()


@needs_real
def test_nih_rgb_and_rgba_pngs_read_as_their_luma():
    with open(REAL / "nih1000-64px" / "labels.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_mode: dict[str, Path] = {}
    for row in rows:
        path = REAL / "nih1000-64px" / row["path"]
        with Image.open(path) as img:
            by_mode.setdefault(img.mode, path)
        if len(by_mode) == 2:
            break
    assert set(by_mode) == {"RGB", "RGBA"}
    for path in by_mode.values():
        image = load_image(path)
        with Image.open(path) as img:
            luma = np.asarray(img.convert("L"), dtype=np.float32) / 255  # alpha is 255 throughout
        assert image.shape == (64, 64) and image.dtype == np.float32
        np.testing.assert_allclose(image, luma, atol=1e-6)


@needs_real
@pytest.mark.parametrize("name", ["00000001_000.png", "tbx11k_test_data/imgs/tb/tb0005.png"])
def test_full_size_grayscale_and_rgb_pngs(name):
    image = load_image(XRV / name)
    assert image.shape == (512, 512) and 0.0 <= image.min() < image.max() <= 1.0
    assert check_image(XRV / name) == image_size(XRV / name) == (512, 512)


@needs_real
def test_large_jpeg_decodes_reduced_without_changing_the_model_input():
    path = XRV / "covid-19-pneumonia-58-prior.jpg"
    full = read_image(path)
    reduced = read_image(path, reduce_to=128)
    assert full.size == reduced.size == full.pixels.shape == (2373, 2373)
    assert reduced.pixels.shape == (297, 297)  # 1/8 scale, still >= 128
    difference = np.abs(resized(full.pixels, 128) - resized(reduced.pixels, 128))
    assert difference.mean() < 0.01 and np.percentile(difference, 99) < 0.05
    assert read_image(path, reduce_to=512).pixels.shape == (594, 594)  # 1/4: 1/8 would be < 512


@needs_real
def test_monochrome1_cr_dicom_is_windowed_and_inverted():
    path = REAL / "pydicom-chest-cr" / "RG1_UNCR.dcm"
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and "WindowCenter" in ds
    image = load_image(path)
    assert image.shape == (1955, 1841) and 0.0 <= image.min() < image.max() <= 1.0
    stored = ds.pixel_array.astype(np.float64)[::8, ::8].ravel()
    # bright (dense) must be low stored values in MONOCHROME1: strongly negative relation
    assert np.corrcoef(stored, image[::8, ::8].ravel())[0, 1] < -0.9
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    inside = (stored > center - width / 2 + 1) & (stored < center + width / 2 - 1)
    expected = 1.0 - (stored[inside] - (center - 0.5)) / (width - 1) - 0.5  # DICOM linear window, inverted
    np.testing.assert_allclose(image[::8, ::8].ravel()[inside], expected, atol=2e-3)


@needs_real
def test_jpeg_compressed_cr_dicom():
    path = next(XRV.glob("*.dcm"))
    assert check_image(path) == (1024, 1024)
    image = load_image(path)
    assert image.shape == (1024, 1024) and image.std() > 0.05


@needs_real
def test_manifest_of_real_images_keeps_every_row(tmp_path):
    """Absolute paths to the shared folder: refused by default, all kept and checked when allowed."""
    names = ["00000001_000.png", "covid-19-pneumonia-58-prior.jpg", "16747_3_1.jpg",
             "tbx11k_test_data/imgs/health/h0001.png", next(XRV.glob("*.dcm")).name]  # fmt: skip
    rows = [{"id": f"s{i}", "image": str(XRV / name), "findings": "x"} for i, name in enumerate(names)]
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "image", "findings"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ManifestError) as caught:
        read_manifest(tmp_path)
    assert [(p.row, p.field) for p in caught.value.problems] == [(row, "image") for row in range(2, 7)]
    manifest = read_manifest(tmp_path, allow_outside_paths=True)
    assert [s.id for s in manifest.studies] == [r["id"] for r in rows] and manifest.problems == []


# --------------------------------------------------------------- made-up edge cases
@pytest.mark.parametrize(("orientation", "turn"), [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied_to_pixels_and_sizes(tmp_path, orientation, turn):
    pixels = np.zeros((40, 100), np.uint8)
    pixels[:10, :20] = 255  # a bright top-left corner marks the orientation
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.jpg"
    Image.fromarray(pixels).save(path, quality=95, exif=exif)
    expected = np.rot90(pixels, turn) / 255.0
    image = load_image(path)
    assert image.shape == expected.shape
    assert np.abs(image - expected).mean() < 0.02
    assert image_size(path) == check_image(path) == read_image(path).size == expected.shape


def test_transparency_is_composited_over_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:2, :, 3] = 0  # top half fully transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(image[:2], 0.0)
    np.testing.assert_allclose(image[2:], 200 / 255, atol=1e-6)

    palette = Image.fromarray(gradient(8, 8)).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "p.png", transparency=palette.getpixel((0, 0)))
    image = load_image(tmp_path / "p.png")
    assert image[0, 0] == 0.0 and image[0, -1] > 0.9


def test_16_bit_png_and_palette_png(tmp_path):
    sixteen = (np.tile(np.linspace(0, 1, 30), (20, 1)) * 4095).astype(np.uint16)  # 12-bit data
    Image.fromarray(sixteen).save(tmp_path / "a.png")
    np.testing.assert_allclose(load_image(tmp_path / "a.png")[0], np.linspace(0, 1, 30), atol=1e-3)
    Image.fromarray(gradient(8, 8)).convert("P").save(tmp_path / "p.png")
    np.testing.assert_allclose(load_image(tmp_path / "p.png"), gradient(8, 8) / 255.0, atol=1.5 / 255)


def test_dataset_decodes_a_large_jpeg_reduced_and_normalises_boxes_by_its_full_size(tmp_path):
    """A 2400 x 1200 JPEG bound for 32 x 32 decodes at 1/8 scale; the box keeps its full-scale meaning."""
    from medmodal.data.dataset import StudyDataset
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.data.types import Box, Study

    pixels = np.zeros((1200, 2400), np.uint8)
    pixels[300:900, 600:1800] = 255
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    assert read_image(tmp_path / "big.jpg", reduce_to=32).pixels.shape == (150, 300)
    study = Study(id="a", row=2, image=tmp_path / "big.jpg", labels=["nodule"],
                  boxes=[Box("nodule", (600.0, 300.0, 1800.0, 900.0))])  # fmt: skip
    dataset = StudyDataset([study], ReportTokenizer.train(["x y"], min_freq=1), ["nodule"], image_size=32)
    item = dataset[0]
    torch.testing.assert_close(item["boxes"][0], torch.tensor([0.25, 0.25, 0.75, 0.75]))
    image = item["image"][0] * 0.25 + 0.5  # back to [0, 1]
    assert image[16, 16] > 0.95 and image[2, 2] < 0.05  # the bright block sits where the box says
