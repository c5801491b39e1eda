"""SIIM pneumothorax importer: real run-length codes from the wheel decoded against the challenge's own decoder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medmodal.data.importers.siim import RLEError, decode_relative_rle, import_siim

from .real_tables import (
    REAL_IMAGES,
    needs_real_images,
    needs_wheel,
    problem_cells,
    read_member,
    write_image,
    write_source,
)


def challenge_rle2mask(rle: str, width: int, height: int) -> np.ndarray:
    """The decoder published with the challenge (mask_functions.py), used as ``rle2mask(...).T``."""
    mask = np.zeros(width * height)
    array = np.asarray([int(x) for x in rle.split()])
    starts, lengths = array[0::2], array[1::2]
    current = 0
    for index, start in enumerate(starts):
        current += start
        mask[current : current + lengths[index]] = 255
        current += lengths[index]
    return mask.reshape(width, height)


@pytest.fixture(scope="module")
def table():
    frame = read_member("siim-pneumothorax-train-rle.csv.gz", nrows=300)
    frame.columns = [c.strip() for c in frame.columns]
    return frame


@needs_wheel
def test_decoder_matches_the_challenge_decoder(table):
    codes = [c.strip() for c in table["EncodedPixels"] if c.strip() != "-1"][:20]
    assert len(codes) == 20
    for code in codes:
        ours = decode_relative_rle(code)
        assert np.array_equal(ours, challenge_rle2mask(code, 1024, 1024).T > 0)
        assert ours.sum() == sum(int(v) for v in code.split()[1::2])


def test_bad_codes():
    for code, message in (
        ("1 2 3", "pairs"),
        ("5 -1", "pairs"),
        ("1048570 10", "beyond"),
        ("a b", "integers"),
    ):
        with pytest.raises(RLEError, match=message):
            decode_relative_rle(code)


@needs_wheel
def test_import_writes_masks_and_boxes(table, tmp_path):
    sample = table.head(120)
    sample.to_csv(tmp_path / "train-rle.csv", index=False)
    ids = sample["ImageId"].unique()
    positive = next(
        i for i in ids if (sample.loc[sample["ImageId"] == i, "EncodedPixels"].str.strip() != "-1").any()
    )
    for image_id in ids:
        write_image(tmp_path / "png" / f"{image_id}.png", size=1024 if image_id == positive else 64)
    result = import_siim(tmp_path, tmp_path / "out", images=tmp_path / "png", check_images=True)
    assert result.problems == [] and result.manifest.problems == [] and result.rows_written == len(ids)
    study = next(s for s in result.manifest.studies if s.id == positive)
    codes = [c.strip() for c in sample.loc[sample["ImageId"] == positive, "EncodedPixels"]]
    mask = np.array(Image.open(tmp_path / "out" / study.extra["mask"]))
    union = np.any([decode_relative_rle(c) for c in codes], axis=0)
    assert mask.shape == (1024, 1024) and np.array_equal(mask == 1, union) and set(np.unique(mask)) <= {0, 1}
    assert study.labels == ["pneumothorax"] and len(study.boxes) == len(codes)
    ys, xs = np.nonzero(decode_relative_rle(codes[0]))
    assert study.boxes[0].box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    small = next(s for s in result.manifest.studies if s.id != positive)
    assert np.array(Image.open(tmp_path / "out" / small.extra["mask"])).shape == (64, 64)


def test_bad_rows_named(tmp_path):
    table = "ImageId, EncodedPixels\na,-1\nb,10 5\n,-1\nc,3 x\nb,-1\n"
    result = import_siim(write_source(tmp_path, "train-rle.csv", table, "abc", size=1024), tmp_path / "out")
    assert problem_cells(result) == {(4, "ImageId"), (5, "EncodedPixels"), (6, "EncodedPixels")}
    assert [s.id for s in result.manifest.studies] == ["a"]


@needs_wheel
@needs_real_images
def test_the_real_siim_dicom(table, tmp_path):
    """The challenge's DICOM in the shared folder is the table's first image (no pneumothorax)."""
    dicom = next((REAL_IMAGES / "torchxrayvision-tests").glob("1.2.276.*.dcm"))
    table.head(1).to_csv(tmp_path / "train-rle.csv", index=False)
    result = import_siim(tmp_path, tmp_path / "out", images=dicom.parent, check_images=True)
    study = result.manifest.studies[0]
    assert study.id == dicom.stem and study.labels == [] and study.image == dicom.resolve()
    assert np.array(Image.open(tmp_path / "out" / study.extra["mask"])).max() == 0
