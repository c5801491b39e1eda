"""Grad-CAM shapes, Grad-CAM on a model trained to look at a known region, decoder attention."""

from __future__ import annotations

import pytest
import torch

from explain.helpers import make_batch, tiny_model
from medmodal.explain.faithfulness import box_pixel_mask, mass_in_box, pointing_hit
from medmodal.explain.image import grad_cam, image_saliency, normalise_map, sentence_spans


def test_grad_cam_shapes_and_sign(batch):
    maps = grad_cam(tiny_model(), batch, [0, 2])
    assert maps.shape == (3, 2, 32, 32)
    assert (maps >= 0).all() and maps.sum() > 0
    assert torch.allclose(normalise_map(maps).flatten(-2).amax(-1), torch.ones(3, 2))


def test_grad_cam_is_zero_where_the_model_saw_no_image(batch):
    batch["has_image"] = torch.tensor([True, False, True])
    maps = grad_cam(tiny_model(), batch, [1])
    assert maps[1].sum() == 0 and maps[0].sum() > 0


def square_task(
    n: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images [n, 1, S, S] of noise with the same added brightness: positives as one bright
    square at a random place in the top-left quadrant, negatives spread evenly over the image.
    Only the square decides the label (global intensity does not).
    -> (images, labels [n], square boxes [n, 4] normalised, zeros for negatives)."""
    images = 0.3 * torch.randn(n, 1, size, size, generator=generator)
    labels = (torch.rand(n, generator=generator) < 0.5).float()
    side, half = size // 4, size // 2
    boxes = torch.zeros(n, 4)

    def place(limit: int, extent: int) -> tuple[int, int]:
        return tuple(int(torch.randint(0, limit - extent + 1, (1,), generator=generator)) for _ in range(2))

    for i in range(n):
        if labels[i]:
            y, x = place(half, side)
            images[i, 0, y : y + side, x : x + side] += 2.0
            boxes[i] = torch.tensor([x, y, x + side, y + side]) / size
        else:
            images[i] += 2.0 * side * side / (size * size)
    return images, labels, boxes


def trained_square_model(steps: int = 60):
    """A small image-only model trained on :func:`square_task` (it learns the task: checked)."""
    generator = torch.Generator().manual_seed(0)
    model = tiny_model(modalities="image", widths=(8, 16, 32))  # 32 px -> 4 x 4 grid
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        images, labels, _ = square_task(32, 32, generator)
        logits = model({"image": images, "has_image": torch.ones(32, dtype=torch.bool)}).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    images, labels, boxes = square_task(64, 32, generator)
    batch = {"image": images, "has_image": torch.ones(64, dtype=torch.bool)}
    with torch.no_grad():
        probs = torch.sigmoid(model(batch).logits[:, 0])
    assert ((probs > 0.5).float() == labels).float().mean() > 0.9  # the task was learnt
    return model, batch, labels, boxes


@pytest.fixture(scope="module")
def square_model():
    torch.set_num_threads(1)
    return trained_square_model()


def localisation_scores(maps: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> tuple[float, float]:
    """(pointing game, mean mass in the true box) over the positives."""
    positives = torch.nonzero(labels).flatten().tolist()
    inside = [box_pixel_mask(boxes[i].tolist(), 32, 32) for i in positives]
    hits = sum(pointing_hit(maps[i], m) for i, m in zip(positives, inside)) / len(positives)
    mass = sum(mass_in_box(maps[i], m) for i, m in zip(positives, inside)) / len(positives)
    return hits, mass


CHANCE = (32 // 4) ** 2 / 32**2  # the square's share of the image: 1/16


def test_occlusion_concentrates_on_the_region_that_decides_the_label(square_model):
    model, batch, labels, boxes = square_model
    hits, mass = localisation_scores(image_saliency(model, batch, [0], "occlusion")[:, 0], labels, boxes)
    assert hits > 0.8, hits
    assert mass > 3 * CHANCE, mass


@pytest.mark.xfail(
    strict=True,
    reason=(
        "measured: on this task Grad-CAM of the last feature map is near-uniform (pointing ~0.06, mass "
        "~chance) although the model has learnt the task and occlusion finds the square; see docs/explain.md"
    ),
)
def test_grad_cam_concentrates_on_the_region_that_decides_the_label(square_model):
    model, batch, labels, boxes = square_model
    hits, mass = localisation_scores(image_saliency(model, batch, [0], "gradcam")[:, 0], labels, boxes)
    assert hits > 0.6, hits
    assert mass > 3 * CHANCE, mass


def test_sentence_spans_split_at_full_stops_and_stop_at_eos():
    dot, eos, pad = 9, 3, 0
    assert sentence_spans([5, 6, dot, 7, dot, eos, pad], {dot}, {eos, pad}) == [(0, 3), (3, 5)]
    assert sentence_spans([5, 6, dot, 7], {dot}, {eos, pad}) == [(0, 3), (3, 4)]
    assert sentence_spans([eos], {dot}, {eos, pad}) == []


def test_decoder_attention_maps_per_sentence():
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.explain.image import decoder_attention_by_sentence

    tokenizer = ReportTokenizer.train(["heart is normal . no effusion . lungs clear ."] * 3, min_freq=1)
    model = tiny_model(generation=True, vocab=tokenizer.vocab_size)
    batch = make_batch(batch_size=2)
    batch["text_ids"] = batch["text_ids"] % tokenizer.vocab_size
    result = decoder_attention_by_sentence(model, batch, tokenizer, max_len=12, max_sentences=3)
    assert len(result) == 2
    for sentences in result:
        assert len(sentences) <= 3
        for s in sentences:
            assert s.attention.shape == (32, 32) and (s.attention >= 0).all()
            assert any(ch.isalnum() for ch in s.text)
