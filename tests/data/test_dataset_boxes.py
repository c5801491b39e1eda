"""Every box of a study in the batch (``box_list`` / ``box_labels``), and the largest-per-class view."""

from __future__ import annotations

import numpy as np
import torch

from medmodal.config import AugmentConfig
from medmodal.data.dataset import StudyDataset, box_list, collate, denormalize_image, largest_box_per_class
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Box, Study

from .fixtures import write_png

LABELS = ["effusion", "nodule", "opacity"]
INDEX = {name: i for i, name in enumerate(LABELS)}


def test_box_list_keeps_every_box_of_known_labels_normalised_and_padded():
    boxes = [Box("nodule", (6, 4, 30, 20)), Box("nodule", (0, 0, 3, 3)), Box("mass", (1, 1, 9, 9)),
             Box("effusion", (10, 20, 50, 40))]  # fmt: skip
    listed, labels = box_list(boxes, INDEX, height=40, width=60, max_boxes=5)
    assert labels.tolist() == [1, 1, 0, -1, -1]  # "mass" is not a label of the model
    assert torch.allclose(listed[0], torch.tensor([6 / 60, 4 / 40, 30 / 60, 20 / 40]))
    assert torch.allclose(listed[1], torch.tensor([0, 0, 3 / 60, 3 / 40]))
    assert (listed[3:] == 0).all()
    largest, mask = largest_box_per_class(listed, labels, len(LABELS))
    assert mask.tolist() == [True, True, False]
    assert torch.equal(largest[1], listed[0]) and torch.equal(largest[0], listed[2])


def test_box_list_keeps_the_largest_boxes_when_a_study_has_more_than_max_boxes():
    boxes = [Box("nodule", (0, 0, k, k)) for k in range(1, 8)]
    listed, labels = box_list(boxes, INDEX, height=10, width=10, max_boxes=3)
    assert (labels == 1).all()
    assert sorted(round(float(b[2]) * 10) for b in listed) == [5, 6, 7]


def test_batch_holds_every_box_and_augmentation_moves_all_of_them(tmp_path):
    pixels = np.zeros((64, 64), np.uint8)
    pixels[10:20, 36:46] = 255  # lesion 1 (36, 10, 46, 20)
    pixels[40:56, 8:20] = 255  # lesion 2 (8, 40, 20, 56)
    path = write_png(tmp_path / "two.png", pixels)
    study = Study("two", 2, image=path, labels=["nodule"],
                  boxes=[Box("nodule", (36, 10, 46, 20)), Box("nodule", (8, 40, 20, 56))])  # fmt: skip
    tokenizer = ReportTokenizer.train(["cough", "nodule"], min_freq=1)
    plain = StudyDataset([study], tokenizer, LABELS, image_size=64, max_boxes=4)[0]
    assert plain["box_labels"].tolist() == [1, 1, -1, -1]
    assert plain["box_mask"].tolist() == [False, True, False]
    batch = collate([plain, plain])
    assert batch["box_list"].shape == (2, 4, 4) and batch["box_labels"].shape == (2, 4)

    geometric = AugmentConfig(enabled=True, rotate_degrees=20, scale=0.1, contrast_gamma=(1.0, 1.0),
                              noise_std=0.0, prob=1.0)  # fmt: skip
    dataset = StudyDataset(
        [study], tokenizer, LABELS, image_size=64, augment=geometric, train=True, seed=1, max_boxes=4
    )
    for _ in range(3):
        item = dataset[0]
        bright = (denormalize_image(item["image"])[0] > 0.5).float()
        kept = item["box_labels"] >= 0
        assert int(kept.sum()) == 2
        covered = torch.zeros_like(bright)
        for box in item["box_list"][kept]:
            x0, y0, x1, y1 = (box * 64).round().long().tolist()
            assert bright[y0:y1, x0:x1].sum() > 60  # a lesion (100 and 192 px before scaling) in each box
            covered[y0:y1, x0:x1] = 1
        assert (bright * covered).sum() >= 0.95 * bright.sum()  # the two boxes hold both lesions
