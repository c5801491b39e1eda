"""Thresholds of diagnosis-driven generation are chosen on validation and kept by the model."""

import numpy as np
import pytest
import torch

from medmodal.config import Config, apply_overrides
from medmodal.evaluation.metrics import best_f1_thresholds
from medmodal.training.finding_thresholds import BestF1Thresholds
from medmodal.training.module import MultimodalModule

VOCAB, PAD, BOS, EOS, NUM_LABELS = 30, 0, 1, 2, 3


def make_batch(seed: int, size: int = 6) -> dict:
    """A small batch dict (DEVELOPERS.md keys) with every modality present."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(3, VOCAB, (size, 7), generator=g)
    targets[:, 0], targets[:, -1] = BOS, EOS
    return {
        "image": torch.randn(size, 1, 32, 32, generator=g),
        "has_image": torch.ones(size, dtype=torch.bool),
        "text_ids": torch.randint(3, VOCAB, (size, 5), generator=g),
        "text_mask": torch.ones(size, 5, dtype=torch.bool),
        "has_text": torch.ones(size, dtype=torch.bool),
        "labels": torch.randint(0, 2, (size, NUM_LABELS), generator=g).float(),
        "target_ids": targets,
    }


TINY = {
    "model.embed_dim": 16,
    "model.image_encoder.name": "small_cnn",
    "model.image_encoder.kwargs": {"widths": [8, 8, 8, 16], "stem_width": 8},
    "model.text_encoder.kwargs": {"embed_dim": 8},
    "model.decoder.kwargs": {"attn_dim": 8},
    "model.heads.localization": False,
}


def module(**overrides) -> MultimodalModule:
    config = apply_overrides(Config(), {**TINY, **overrides})
    return MultimodalModule(config.model_dump(), VOCAB, NUM_LABELS, PAD, BOS, EOS)


def test_metric_gives_the_best_f1_thresholds_of_all_batches():
    g = torch.Generator().manual_seed(0)
    probs, labels = torch.rand(40, 3, generator=g), (torch.rand(40, 3, generator=g) > 0.6).float()
    metric = BestF1Thresholds()
    metric.update(probs[:25], labels[:25])
    metric.update(probs[25:], labels[25:])
    expected = best_f1_thresholds(probs.numpy(), labels.numpy())
    assert np.allclose(metric.compute().numpy(), expected)


@pytest.mark.filterwarnings("ignore:.*self.log.*")
def test_validation_epoch_sets_the_models_thresholds():
    lit = module(**{"model.report_conditioning.mode": "findings"}).eval()
    batches = [make_batch(seed=s) for s in range(3)]
    with torch.no_grad():
        for i, batch in enumerate(batches):
            lit.validation_step(batch, i)
        probs = torch.cat([torch.sigmoid(lit.model(b).logits) for b in batches])
        lit.on_validation_epoch_end()
    labels = torch.cat([b["labels"] for b in batches])
    expected = best_f1_thresholds(probs.numpy(), labels.numpy())
    assert np.allclose(lit.model.finding_thresholds.numpy(), expected, atol=1e-6)
    assert "model.finding_thresholds" in lit.state_dict()  # the checkpoint keeps them


def test_fixed_threshold_and_unconditioned_models_collect_nothing():
    assert (
        module(
            **{"model.report_conditioning.mode": "findings", "model.report_conditioning.threshold": 0.4}
        ).val_thresholds
        is None
    )
    assert module(**{"model.report_conditioning.mode": "none"}).val_thresholds is None
    assert module().val_thresholds is not None  # the default: conditioned, thresholds chosen on validation
