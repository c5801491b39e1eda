"""The per-study fast paths of streamed training on prepared data (benchmarks/prepared_step_profile.py):
raw ``.npy`` pixels without numpy's header parser, box targets that skip padding rows, no target
tokenisation for a model without a report decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmodal.data.dataset import largest_box_per_class
from medmodal.data.prepared import PreparedDataError, decode_pixels, item_builder, npy_bytes
from medmodal.data.tokenizer import ReportTokenizer
from medmodal.data.types import Study


def test_pixels_written_by_prepare_are_read_without_numpy_load(monkeypatch):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    data = npy_bytes(pixels)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("numpy.load used for a member prepare wrote"))
    np.testing.assert_array_equal(decode_pixels(data, 8, "m"), pixels)


@pytest.mark.parametrize("data", [
    npy_bytes(np.zeros((8, 8), np.uint8))[:-1],  # the right header, one byte short
    npy_bytes(np.zeros((4, 16), np.uint8)),  # the same number of pixels, another shape
])  # fmt: skip
def test_other_members_still_go_through_the_checked_reader(data):
    with pytest.raises(PreparedDataError, match="where"):
        decode_pixels(data, 8, "where")


def _reference_largest(boxes, labels, num_labels):
    """The largest box of each class by a full sort over every row (the definition)."""
    out, mask = torch.zeros(num_labels, 4), torch.zeros(num_labels, dtype=torch.bool)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in torch.argsort(area, descending=True, stable=True).tolist():
        c = int(labels[k])
        if c >= 0 and not mask[c]:
            out[c], mask[c] = boxes[k], True
    return out, mask


@pytest.mark.parametrize("seed", range(5))
def test_largest_box_per_class_skips_padding_with_the_same_result(seed):
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(32, 2, 2, generator=g)
    boxes = torch.cat([corners.min(1).values, corners.max(1).values], dim=1)
    labels = torch.randint(-1, 4, (32,), generator=g)
    labels[20:] = -1
    boxes[25:] = 0.0  # padding rows are zeros, as box_list writes them
    for got, want in zip(largest_box_per_class(boxes, labels, 4), _reference_largest(boxes, labels, 4)):
        torch.testing.assert_close(got, want)
    out, mask = largest_box_per_class(torch.zeros(32, 4), torch.full((32,), -1), 3)
    assert not mask.any() and not out.any()


def test_no_target_tokens_for_a_model_without_a_decoder(monkeypatch):
    from medmodal.config import Config

    tokenizer = ReportTokenizer.train(["heart normal lungs clear", "small effusion"], min_freq=1)
    study = Study(id="s", row=0, sections={"indication": "cough", "findings": "heart normal lungs clear"},
                  labels=[], split="train")  # fmt: skip
    data = Config().data
    with_targets = item_builder(tokenizer, ["effusion"], data, train=False, seed=0).item(study, None)
    without = item_builder(tokenizer, ["effusion"], data, train=False, seed=0, targets=False).item(
        study, None
    )
    assert int((with_targets["target_ids"] != tokenizer.pad_id).sum()) == 6  # [BOS] 4 words [EOS]
    assert without["target_ids"][:2].tolist() == [tokenizer.bos_id, tokenizer.eos_id]
    assert int((without["target_ids"] != tokenizer.pad_id).sum()) == 2
    torch.testing.assert_close(without["text_ids"], with_targets["text_ids"])
