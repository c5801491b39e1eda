"""Predictor inputs: a path, a numpy array, a PIL image and a pydicom Dataset of one image predict alike."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file


@pytest.fixture(scope="module")
def image_path(tiny_data):
    return min((tiny_data / "images").glob("*.png"))


def test_array_pil_image_and_path_give_the_same_prediction(predictor, image_path):
    text = "Cough and fever."
    from_path = predictor.predict(image_path, text)
    pixels = np.asarray(Image.open(image_path))
    for source in (pixels, Image.fromarray(pixels), Image.open(image_path), str(image_path)):
        result = predictor.predict(source, text)
        assert result["labels"] == from_path["labels"]
        assert result.get("boxes") == from_path.get("boxes")
        assert result["modalities"] == {"image": True, "text": True}


def test_rgb_array_predicts_as_the_rgb_png_of_it(predictor, tmp_path, image_path):
    gray = np.asarray(Image.open(image_path).convert("L"))
    rgb = np.stack([gray, np.roll(gray, 3, axis=1), gray], axis=-1)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    assert predictor.predict(rgb)["labels"] == predictor.predict(path)["labels"]


def test_dicom_dataset_predicts_as_its_file(predictor):
    path = get_testdata_file("CT_small.dcm")
    from_file = predictor.predict(path)
    from_dataset = predictor.predict(pydicom.dcmread(path))
    assert from_dataset["labels"] == from_file["labels"]
    assert from_dataset.get("boxes") == from_file.get("boxes")


def test_in_memory_image_differs_from_no_image(predictor, image_path):
    """The decoded image reaches the model (not the missing-image placeholder)."""
    pixels = np.asarray(Image.open(image_path))
    assert predictor.batch(pixels)["has_image"].tolist() == [True]
    assert predictor.predict(pixels, "Cough.")["labels"] != predictor.predict(None, "Cough.")["labels"]


def test_boxes_are_in_pixels_of_the_in_memory_image(predictor, image_path):
    pixels = np.asarray(Image.open(image_path))
    wide = np.asarray(Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0])))
    result = predictor.predict(wide, threshold=0.0)
    assert result["boxes"], "threshold 0 predicts every label"
    for row in result["boxes"]:
        x0, y0, x1, y1 = row["box"]
        assert 0 <= x0 <= x1 <= wide.shape[1] and 0 <= y0 <= y1 <= wide.shape[0]


def test_unreadable_in_memory_image_is_a_value_error(predictor):
    with pytest.raises(ValueError, match="expected"):
        predictor.predict(np.zeros((3, 8, 8), dtype=np.uint8))
