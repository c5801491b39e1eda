"""The box head's heatmap peaks as classification evidence (models/peak_evidence.py)."""

from __future__ import annotations

import math

import pytest
import torch

from medmodal.config import ModelConfig
from medmodal.models import create_model
from medmodal.models.peak_evidence import PeakEvidence

from .helpers import BOS, EOS, NUM_LABELS, PAD, VOCAB, make_batch


def _evidence(weight: float = 0.5) -> PeakEvidence:
    evidence = PeakEvidence(3)
    evidence.set(
        weight,
        torch.tensor([2.0, 1.0, 3.0]),
        torch.tensor([-1.0, 0.5, 0.0]),
        torch.tensor([True, True, False]),
    )
    return evidence.eval()


def test_the_mix_is_hand_computed_for_boxed_findings_and_leaves_the_others():
    logits = torch.tensor([[1.0, -2.0, 0.7]])
    peaks = torch.tensor([[0.5, 4.0, 9.0]])
    out = _evidence(0.25)(logits, peaks)
    # (1 - w) z + w (a h + b): 0.75 * 1 + 0.25 * (2 * 0.5 - 1); 0.75 * -2 + 0.25 * (4 + 0.5); the third unboxed
    assert out[0].tolist() == pytest.approx([0.75, -1.5 + 1.125, 0.7])


def test_rows_whose_image_was_not_seen_keep_their_logits():
    logits, peaks = torch.randn(3, 3), torch.randn(3, 3) * 5
    seen = torch.tensor([True, False, True])
    out = _evidence(0.5)(logits, peaks, seen)
    assert torch.equal(out[1], logits[1])
    assert torch.equal(out[[0, 2]], _evidence(0.5)(logits[[0, 2]], peaks[[0, 2]]))


def test_it_is_the_identity_until_set_and_in_training_mode():
    logits, peaks = torch.randn(4, 3), torch.randn(4, 3) * 5
    assert torch.equal(PeakEvidence(3).eval()(logits, peaks), logits)
    trained = _evidence(1.0).train()
    assert torch.equal(trained(logits, peaks), logits)
    assert not torch.equal(trained.eval()(logits, peaks), logits)


def test_training_sends_no_gradient_through_the_peaks_explanations_see_them():
    peaks = torch.randn(2, 3, requires_grad=True)
    logits = torch.randn(2, 3, requires_grad=True)
    _evidence(0.5).train()(logits, peaks).sum().backward()
    assert peaks.grad is None and logits.grad is not None
    _evidence(0.5)(logits, peaks).sum().backward()  # eval mode: Grad-CAM differentiates through the mix
    assert peaks.grad is not None and peaks.grad[:, 2].eq(0).all() and peaks.grad[:, :2].ne(0).all()


@pytest.mark.parametrize(
    ("weight", "scale", "bias", "boxed", "message"),
    [
        (1.5, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1, 1, 1], "weight"),
        (math.nan, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1, 1, 1], "weight"),
        (0.5, [1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1, 1, 1], "scales"),
        (0.5, [1.0, math.inf, 1.0], [0.0, 0.0, 0.0], [1, 1, 1], "scales"),
        (0.5, [1.0, 1.0, 1.0], [0.0, math.nan, 0.0], [1, 1, 1], "biases"),
        (0.5, [1.0, 1.0], [0.0, 0.0], [1, 1], "shape"),
    ],
)
def test_hostile_values_are_refused_when_set_and_when_loaded(weight, scale, bias, boxed, message):
    values = (torch.tensor(scale), torch.tensor(bias), torch.tensor(boxed, dtype=torch.bool))
    with pytest.raises(ValueError, match=message):
        PeakEvidence(3).set(weight, *values)
    state = {"weight": torch.tensor(weight), "scale": values[0], "bias": values[1], "boxed": values[2]}
    with pytest.raises(ValueError, match=f"checkpoint.*{message}"):
        PeakEvidence(3).load_state_dict(state)


def test_the_fitted_values_round_trip_through_the_state_dict():
    fitted = _evidence(0.75)
    loaded = PeakEvidence(3)
    loaded.load_state_dict(fitted.state_dict())
    logits, peaks = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.equal(loaded.eval()(logits, peaks), fitted(logits, peaks))


def _model(**localization) -> torch.nn.Module:
    cfg = ModelConfig(modalities="both", embed_dim=16, localization=localization)
    return create_model(cfg, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS)


def test_the_model_mixes_its_own_heatmap_peaks_before_the_calibration():
    torch.manual_seed(0)
    model = _model(peak_evidence=True).eval()
    batch = make_batch(image_size=64)
    with torch.no_grad():
        before = model(batch).logits
        model.peak_evidence.set(
            0.5,
            torch.full((NUM_LABELS,), 2.0),
            torch.zeros(NUM_LABELS),
            torch.ones(NUM_LABELS, dtype=torch.bool),
        )
        model.set_calibration(torch.full((NUM_LABELS,), 3.0), torch.full((NUM_LABELS,), 1.0))
        out = model(batch)
    peaks = out.localization.heatmaps.flatten(2).max(dim=-1).values
    assert torch.allclose(out.logits, 3.0 * (0.5 * before + 0.5 * 2.0 * peaks) + 1.0, atol=1e-5)
    # a study without its image: the placeholder's heatmaps are not evidence, its logits are the classifier's
    batch["has_image"][1] = False
    with torch.no_grad():
        model.set_calibration(torch.ones(NUM_LABELS), torch.zeros(NUM_LABELS))
        mixed = model(batch).logits
        model.peak_evidence.set(
            0.0, torch.ones(NUM_LABELS), torch.zeros(NUM_LABELS), torch.ones(NUM_LABELS, dtype=torch.bool)
        )
        plain = model(batch).logits
    assert torch.allclose(mixed[1], plain[1]) and not torch.allclose(mixed[0], plain[0])


def test_models_without_a_box_head_or_without_the_option_have_none():
    assert _model(peak_evidence=False).peak_evidence is None
    cfg = ModelConfig(modalities="text", embed_dim=16, localization={"peak_evidence": True})
    text_only = create_model(cfg, vocab_size=VOCAB, num_labels=NUM_LABELS, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert text_only.peak_evidence is None and text_only.localizer is None
    assert "model.peak_evidence.weight" not in _model().state_dict()  # older checkpoints load as before
