"""StudyDataset items and batches (the batch dict of DEVELOPERS.md)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medmodal.config import AugmentConfig, DataConfig
from medmodal.data.dataset import (
    BATCH_KEYS,
    IMAGE_MEAN,
    IMAGE_STD,
    StudyDataset,
    collate,
    denormalize_image,
    make_dataloader,
    normalize_image,
    resize_image,
)
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Box, Study

from .fixtures import copy_pydicom_file, gradient, truncate, write_png

LABELS = ["effusion", "nodule", "opacity"]
S = 32


@pytest.fixture(scope="module")
def tokenizer() -> ReportTokenizer:
    texts = ["cough and fever", "small nodule in the right lung .", "no effusion .", "normal heart ."] * 2
    return ReportTokenizer.train(texts, min_freq=1)


@pytest.fixture()
def studies(tmp_path) -> list[Study]:
    ramp = write_png(tmp_path / "ramp.png", gradient(40, 60))  # H 40, W 60
    broken = truncate(
        write_png(tmp_path / "broken.png", np.random.default_rng(0).integers(0, 255, (90, 90), np.uint8))
    )
    dicom = copy_pydicom_file("CT_small.dcm", tmp_path / "ct.dcm")
    sections = {
        "indication": "Cough and fever",
        "findings": "Small nodule in the right lung.",
        "impression": "",
    }
    return [
        Study("with-box", 2, image=ramp, sections=sections, labels=["nodule", "effusion"], site="north",
              boxes=[Box("nodule", (6, 4, 30, 20)), Box("nodule", (0, 0, 3, 3)), Box("mass", (1, 1, 9, 9))]),
        Study("text-only", 3, sections={"indication": "", "findings": "No effusion.", "impression": ""}),
        Study("broken", 4, image=broken, sections=sections, labels=["opacity"]),
        Study("dicom", 5, image=dicom, sections={"findings": "Normal heart."}, labels=["unknown-label"]),
    ]  # fmt: skip


def make(studies, tokenizer, **kw) -> StudyDataset:
    kw = {"image_size": S, "max_text_tokens": 8, "max_target_tokens": 10, **kw}
    return StudyDataset(studies, tokenizer, LABELS, **kw)


def test_batch_dict_keys_shapes_and_dtypes(studies, tokenizer):
    batch = next(iter(make_dataloader(make(studies, tokenizer), batch_size=4)))
    assert tuple(batch) == BATCH_KEYS
    B, C = 4, len(LABELS)
    assert batch["id"] == ["with-box", "text-only", "broken", "dicom"]
    assert batch["site"] == ["north", "", "", ""]
    expected = {
        "image": ((B, 1, S, S), torch.float32),
        "has_image": ((B,), torch.bool),
        "text_ids": ((B, 8), torch.long),
        "text_mask": ((B, 8), torch.bool),
        "has_text": ((B,), torch.bool),
        "labels": ((B, C), torch.float32),
        "boxes": ((B, C, 4), torch.float32),
        "box_mask": ((B, C), torch.bool),
        "target_ids": ((B, 10), torch.long),
    }
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key
    assert batch["has_image"].tolist() == [True, False, False, True]
    assert batch["has_text"].tolist() == [True, False, True, False]  # text field: indication
    assert batch["labels"].tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_image_is_resized_and_normalised(studies, tokenizer):
    item = make(studies, tokenizer)[0]
    expected = resize_image(gradient(40, 60) / 255.0, S)
    assert torch.allclose(denormalize_image(item["image"]), expected, atol=1 / 255 + 1e-6)
    left, right = (
        denormalize_image(item["image"])[0, :, 0].mean(),
        denormalize_image(item["image"])[0, :, -1].mean(),
    )
    assert left < 0.05 and right > 0.95  # the ramp survives the resize
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(denormalize_image(normalize_image(x)), x)
    assert (
        normalize_image(torch.tensor(IMAGE_MEAN)) == 0
        and normalize_image(torch.tensor(IMAGE_MEAN + IMAGE_STD)) == 1
    )


def test_boxes_are_normalised_by_the_stored_image_size_largest_per_class(studies, tokenizer):
    item = make(studies, tokenizer)[0]
    nodule = LABELS.index("nodule")
    assert item["box_mask"].tolist() == [False, True, False]
    # box (6, 4, 30, 20) on a 60 x 40 image; the 3 x 3 nodule box is smaller; "mass" is not a label
    assert torch.allclose(item["boxes"][nodule], torch.tensor([0.1, 0.1, 0.5, 0.5]))
    assert item["boxes"][0].eq(0).all()


def test_missing_image_gives_zeros_and_no_boxes(studies, tokenizer):
    item = make(studies, tokenizer)[1]
    assert not item["has_image"] and item["image"].eq(0).all()
    assert not item["box_mask"].any()


def test_corrupt_image_does_not_raise_and_is_logged_once(studies, tokenizer, caplog):
    dataset = make(studies, tokenizer)
    with caplog.at_level(logging.WARNING, logger="medmodal.data.dataset"):
        first, second = dataset[2], dataset[2]
    for item in (first, second):
        assert not item["has_image"] and item["image"].eq(0).all()
        assert item["labels"].tolist() == [0, 0, 1]  # the rest of the study is still used
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "broken" in messages[0] and "broken.png" in messages[0]


def test_text_and_target_ids(studies, tokenizer):
    dataset = make(studies, tokenizer, text_fields=("indication", "findings"), max_text_tokens=9)
    item = dataset[0]
    ids = tokenizer.encode("cough and fever [SEP] small nodule in the right lung .", 100)
    assert len(ids) == 11 and ids[3] == tokenizer.sep_id
    assert item["text_ids"].tolist() == ids[:9]  # truncated to L
    assert item["text_mask"].all()

    words = tokenizer.encode("small nodule in the right lung .", 100)  # findings + empty impression
    assert len(words) == 7
    padded = dataset[0]["target_ids"].tolist()  # T = 10
    assert padded == [tokenizer.bos_id, *words, tokenizer.eos_id, tokenizer.pad_id]
    truncated = make(studies, tokenizer, max_target_tokens=6)[0]["target_ids"].tolist()
    assert truncated == [tokenizer.bos_id, *words[:4], tokenizer.eos_id]  # EOS kept

    no_text = make(studies, tokenizer)[1]  # indication only: empty
    assert no_text["text_mask"].sum() == 0 and no_text["text_ids"].eq(tokenizer.pad_id).all()
    assert not no_text["has_text"]


def test_cache_serves_later_reads_and_does_not_change_results(studies, tokenizer):
    cached, uncached = make(studies, tokenizer), make(studies, tokenizer, cache_images=False)
    first = cached[0]["image"]
    assert torch.equal(first, uncached[0]["image"])
    studies[0].image.unlink()
    assert torch.equal(cached[0]["image"], first) and cached[0]["has_image"]
    assert not uncached[0]["has_image"]  # re-read: now missing, handled like a corrupt file


def test_dicom_item(studies, tokenizer):
    item = make(studies, tokenizer)[3]
    assert item["has_image"]
    assert -2.0 <= item["image"].min() and item["image"].max() <= 2.0  # [0, 1] normalised


AUGMENT = AugmentConfig(enabled=True, rotate_degrees=20, scale=0.1, noise_std=0.05, prob=1.0)


def test_augmentation_only_in_training_and_reproducible(studies, tokenizer):
    plain = make(studies, tokenizer)[0]["image"]
    assert torch.equal(make(studies, tokenizer, augment=AUGMENT, train=False)[0]["image"], plain)
    a = make(studies, tokenizer, augment=AUGMENT, train=True, seed=1)
    b = make(studies, tokenizer, augment=AUGMENT, train=True, seed=1)
    first = a[0]["image"]
    assert not torch.equal(first, plain)
    assert torch.equal(first, b[0]["image"])  # same seed, same draw
    assert not torch.equal(first, a[0]["image"])  # next draw differs
    disabled = AugmentConfig(enabled=False, prob=1.0)
    assert torch.equal(make(studies, tokenizer, augment=disabled, train=True)[0]["image"], plain)


def test_augmented_boxes_follow_the_image(tmp_path, tokenizer):
    pixels = np.zeros((64, 64), np.uint8)
    pixels[10:30, 36:56] = 255  # a bright lesion, box (36, 10, 56, 30)
    path = write_png(tmp_path / "lesion.png", pixels)
    study = Study("l", 2, image=path, labels=["nodule"], boxes=[Box("nodule", (36, 10, 56, 30))])
    geometric = AugmentConfig(enabled=True, rotate_degrees=30, scale=0.2, contrast_gamma=(1.0, 1.0),
                              noise_std=0.0, prob=1.0)  # fmt: skip
    dataset = StudyDataset([study], tokenizer, LABELS, image_size=64, augment=geometric, train=True, seed=0)
    for _ in range(5):
        item = dataset[0]
        bright = denormalize_image(item["image"])[0] > 0.5
        rows, cols = torch.nonzero(bright.any(1)).flatten(), torch.nonzero(bright.any(0)).flatten()
        lesion = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / 64
        box = item["boxes"][LABELS.index("nodule")]
        assert item["box_mask"][LABELS.index("nodule")]
        assert torch.allclose(box, lesion, atol=2 / 64), (box, lesion)


def test_loader_order_is_seeded(studies, tokenizer):
    dataset = make(studies, tokenizer)

    def order(seed):
        return [i for b in make_dataloader(dataset, 2, shuffle=True, seed=seed) for i in b["id"]]

    assert order(0) == order(0)
    assert sorted(order(0)) == sorted(s.id for s in studies)
    assert any(order(0) != order(s) for s in range(1, 5))


def test_worker_processes_give_the_same_batches(studies, tokenizer):
    dataset = make(studies, tokenizer)
    serial = [collate([dataset[i] for i in range(4)])]
    parallel = list(make_dataloader(dataset, batch_size=4, num_workers=2))
    for key in BATCH_KEYS:
        a, b = serial[0][key], parallel[0][key]
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_from_config(studies, tokenizer):
    config = DataConfig(image_size=48, max_text_tokens=6, max_target_tokens=12, text_fields=["findings"])
    item = StudyDataset.from_config(studies, tokenizer, LABELS, config)[0]
    assert (
        item["image"].shape == (1, 48, 48)
        and item["text_ids"].shape == (6,)
        and item["target_ids"].shape == (12,)
    )
