"""Word attention / integrated gradients, the faithfulness measures, and the HTML case page."""

from __future__ import annotations

import torch

from explain.helpers import tiny_model
from medmodal.explain.faithfulness import (
    area_under_curve,
    box_pixel_mask,
    deletion_images,
    finding_spans,
    mass_in_box,
    pointing_hit,
    token_mask_for_spans,
    weight_share,
)
from medmodal.explain.text import integrated_gradients, resolve_method, word_attention


def test_word_attention_sums_to_one_over_real_tokens(batch):
    attention = word_attention(tiny_model(), batch)
    assert attention.shape == batch["text_ids"].shape
    assert torch.allclose(attention.sum(1), torch.ones(3), atol=1e-5)
    assert (attention[~batch["text_mask"]] == 0).all()


def test_integrated_gradients_shape_and_completeness(batch):
    model = tiny_model(text_encoder="transformer")
    assert resolve_method(model, "auto") == "integrated_gradients"
    assert resolve_method(tiny_model(), "auto") == "attention"
    attribution = integrated_gradients(model, batch, class_index=1, n_steps=64)
    assert attribution.shape == batch["text_ids"].shape
    assert (attribution[~batch["text_mask"]] == 0).all()
    baseline = dict(
        batch,
        text_ids=torch.where(batch["text_mask"], torch.zeros_like(batch["text_ids"]), batch["text_ids"]),
    )
    with torch.no_grad():
        gap = model(batch).logits[:, 1] - model(baseline).logits[:, 1]
    assert torch.allclose(attribution.sum(1), gap, atol=0.05 * gap.abs().max() + 1e-3)


def test_pointing_and_mass_in_box():
    saliency = torch.zeros(8, 8)
    saliency[1, 2] = 1.0
    saliency[6, 6] = 0.5
    inside = box_pixel_mask([0.25, 0.0, 0.5, 0.5], 8, 8)  # columns 2-3, rows 0-3
    assert inside.sum() == 8 and inside[1, 2] and not inside[6, 6]
    assert pointing_hit(saliency, inside)
    assert abs(mass_in_box(saliency, inside) - 1.0 / 1.5) < 1e-6
    assert not pointing_hit(torch.zeros(8, 8), inside)


def test_deletion_images_remove_pixels_in_order():
    image, baseline = torch.ones(1, 2, 2), torch.zeros(1, 2, 2)
    order = torch.tensor([3, 0, 1, 2])
    images = deletion_images(image, baseline, order, steps=4)
    assert images.shape == (5, 1, 2, 2)
    assert images.flatten(1).sum(1).tolist() == [4, 3, 2, 1, 0]
    assert images[1, 0, 1, 1] == 0 and images[1, 0, 0, 0] == 1  # pixel 3 went first
    assert abs(area_under_curve([1, 1, 1]) - 1.0) < 1e-9 and abs(area_under_curve([1, 0]) - 0.5) < 1e-9


def test_finding_words_from_synonyms_and_related_history():
    text = "Dullness to percussion at the left base. Known CHF with increasing dyspnea. Small effusion."
    spans = finding_spans(text, "effusion", ["base_dullness:left", "chf"])
    covered = {text[s:e].lower() for s, e in spans}
    assert "dullness to percussion at the left base" in covered
    assert "known chf with increasing dyspnea" in covered  # chf relates to effusion
    assert "effusion" in covered
    assert finding_spans(text, "pneumothorax", ["base_dullness:left", "chf"]) == []
    offsets = [(0, 8), (9, 11), (41, 46), (87, 95)]
    assert token_mask_for_spans(offsets, [(0, 39)]) == [True, True, False, False]
    assert abs(weight_share([0.5, -0.25, 0.25], [True, True, False]) - 0.75) < 1e-9


def test_case_page_is_self_contained(tmp_path):
    import numpy as np
    from PIL import Image

    from medmodal.config import Config, apply_overrides
    from medmodal.data.tokenizer import ReportTokenizer
    from medmodal.explain.case import explain_study
    from medmodal.runs import RunDir
    from medmodal.serving.predictor import Predictor
    from medmodal.training.loading import TrainedRun

    tokenizer = ReportTokenizer.train(["fever and productive cough .", "chest trauma ."] * 2, min_freq=1)
    model = tiny_model(vocab=tokenizer.vocab_size)
    config = apply_overrides(Config(), {"data.image_size": 32, "model.heads.generation": False})
    trained = TrainedRun(
        RunDir.at(tmp_path / "run"), config, ["x", "y", "z"], tokenizer, model, tmp_path / "none.ckpt"
    )
    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype("uint8")).save(image)
    case = explain_study(
        Predictor(trained), image, "fever and productive cough.", tmp_path / "out", labels=["y"]
    )
    page = (tmp_path / "out" / "case.html").read_text()
    assert "data:image/png;base64," in page and "src='http" not in page and "<script" not in page
    assert (tmp_path / "out" / "saliency_y.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert case["explained"] == ["y"] and "conflicts" in case
    contributions = case["contributions"]
    for row in contributions:
        assert abs(row["base"] + row["image"] + row["text"] - row["probability"]) < 1e-4
    assert [t["tokens"] for t in case["text"]] == [["fever", "and", "productive", "cough", "."]]
