"""Gradient reversal, the site adversary and the domain-adaptation wiring of training."""

from __future__ import annotations

import pytest
import torch

from medmodal.config import Config, DomainAdaptationConfig, apply_overrides
from medmodal.data.types import Study
from medmodal.models.domain import SiteClassifier, dann_schedule, reverse_gradient, site_loss, site_targets
from medmodal.models.types import ModelOutput
from medmodal.training.domain_adaptation import (
    DomainAdversary,
    labeled_rows,
    split_target_sites,
    task_losses,
)
from medmodal.training.losses import MultitaskLoss


def test_gradient_reversal_is_identity_forward_and_negated_scaled_backward():
    x = torch.randn(5, 3, requires_grad=True)
    weights = torch.randn(5, 3)
    y = reverse_gradient(x, 0.7)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -0.7 * weights)


def test_site_classifier_sends_the_opposite_gradient_to_the_features():
    torch.manual_seed(0)
    head = SiteClassifier(4, 3, hidden_dim=8, dropout=0.0)
    head.coefficient = 0.5
    fused = torch.randn(6, 4, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    site_loss(head(fused), targets).backward()
    reversed_grad = fused.grad.clone()
    fused.grad = None
    site_loss(head.net(fused), targets).backward()  # the same MLP without the reversal
    assert torch.allclose(reversed_grad, -0.5 * fused.grad, atol=1e-6)


def test_dann_schedule_ramps_from_zero_towards_one():
    values = [dann_schedule(p) for p in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == 0.0
    assert values == sorted(values)
    assert 0.99 < values[-1] < 1.0


def test_site_targets_and_loss_ignore_unknown_sites():
    targets = site_targets(["a", "", "b", "zzz"], ["a", "b"])
    assert targets.tolist() == [0, -1, 1, -1]
    logits = torch.tensor([[5.0, -5.0], [0.0, 0.0], [-5.0, 5.0], [9.0, -9.0]])
    assert float(site_loss(logits, targets)) < 0.01  # the two unknown rows (one badly wrong) are ignored
    assert float(site_loss(logits, torch.tensor([-1, -1, -1, -1]))) == 0.0


def _study(i: int, site: str, split: str) -> Study:
    return Study(id=f"s{i}", row=i, image=None, sections={"indication": "x"}, site=site, split=split)


def test_split_target_sites_keeps_target_labels_out():
    train = [_study(0, "a", "train"), _study(1, "b", "train"), _study(2, "b", "train")]
    val = [_study(3, "a", "val"), _study(4, "b", "val")]
    labeled, kept_val, unlabeled = split_target_sites(
        train, val, DomainAdaptationConfig(method="dann", target_sites=["b"])
    )
    assert [s.id for s in labeled] == ["s0"]
    assert [s.id for s in kept_val] == ["s3"]
    assert [s.id for s in unlabeled] == ["s1", "s2"]
    # without dann the target studies are simply left out
    _, _, none = split_target_sites(train, val, DomainAdaptationConfig(method="none", target_sites=["b"]))
    assert none == []
    # default: unchanged
    assert split_target_sites(train, val, DomainAdaptationConfig()) == (train, val, [])
    with pytest.raises(ValueError, match="target_sites"):
        split_target_sites(train, val, DomainAdaptationConfig(target_sites=["nowhere"]))


def _output_and_batch(labeled: list[bool]):
    torch.manual_seed(0)
    b, c = len(labeled), 3
    out = ModelOutput(
        logits=torch.randn(b, c),
        image_logits=torch.randn(b, c),
        text_logits=torch.randn(b, c),
        fused=torch.randn(b, 4, requires_grad=True),
    )
    batch = {
        "labels": torch.randint(0, 2, (b, c)).float(),
        "has_image": torch.ones(b, dtype=torch.bool),
        "has_text": torch.ones(b, dtype=torch.bool),
        "box_mask": torch.zeros(b, c, dtype=torch.bool),
        "boxes": torch.zeros(b, c, 4),
        "site": ["a", "b", "a", "b"][:b],
        "labeled": torch.tensor(labeled),
    }
    return out, batch


def test_task_losses_never_read_the_labels_of_unlabeled_rows():
    loss = MultitaskLoss(Config().train, 3, pad_id=0)
    out, batch = _output_and_batch([True, False, True, False])
    before = task_losses(loss, out, batch).total
    flipped = dict(batch, labels=batch["labels"].clone())
    flipped["labels"][[1, 3]] = 1 - batch["labels"][[1, 3]]  # the unlabeled rows
    assert not torch.equal(flipped["labels"], batch["labels"])
    assert torch.allclose(task_losses(loss, out, flipped).total, before)
    kept_out, kept_batch = labeled_rows(out, batch)
    assert kept_out.logits.shape[0] == 2 and kept_batch["site"] == ["a", "a"]
    # a batch of unlabeled rows only: zero task loss (the site loss still trains)
    out, batch = _output_and_batch([False, False])
    assert float(task_losses(loss, out, batch).total) == 0.0


def test_domain_adversary_uses_every_row_and_scales_lambda_with_progress():
    cfg = DomainAdaptationConfig(method="dann", weight=0.5)
    adversary = DomainAdversary(cfg, 4, ["a", "b"])
    out, batch = _output_and_batch([True, False, True, False])
    loss, accuracy = adversary(out, batch, progress=1.0)
    assert loss.requires_grad and 0.0 <= float(accuracy) <= 1.0
    assert adversary.coefficient(0.0) == 0.0
    assert adversary.coefficient(1.0) == pytest.approx(0.5 * dann_schedule(1.0))
    assert (
        DomainAdversary(
            DomainAdaptationConfig(method="dann", weight=0.5, schedule="constant"), 4, ["a", "b"]
        ).coefficient(0.0)
        == 0.5
    )


@pytest.mark.slow
def test_dann_training_end_to_end_on_built_in_data(tmp_path):
    """Train 1 short epoch with a held-out site used unlabeled: the site loss is logged and
    the run reloads for inference."""
    from medmodal.data.synthetic import generate_dataset
    from medmodal.training.loading import load_trained
    from medmodal.training.trainer import train

    generate_dataset(tmp_path / "data", 60, 0, image_size=32, masks=False)
    cfg = apply_overrides(
        Config(),
        {
            "data.image_size": 32,
            "model.embed_dim": 16,
            "train.epochs": 1,
            "train.progress_bar": False,
            "model.heads.generation": False,
            "train.limit_train_batches": 2,
            "train.batch_size": 16,
            "train.log_every_n_steps": 1,
            "train.domain_adaptation.method": "dann",
            "train.domain_adaptation.target_sites": ["icu"],
        },
    )
    train(tmp_path / "data", cfg, tmp_path / "run")
    metrics = (tmp_path / "run" / "logs" / "csv" / "metrics.csv").read_text()
    assert "train/loss_domain" in metrics and "train/site_accuracy" in metrics
    trained = load_trained(tmp_path / "run")
    assert trained.config.train.domain_adaptation.target_sites == ["icu"]
