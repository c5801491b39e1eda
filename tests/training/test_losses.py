import math

import pytest
import torch
import torch.nn.functional as F

from medmodal.config import TrainConfig
from medmodal.models.types import LocalizationOutput, ModelOutput
from medmodal.training.losses import MultitaskLoss, paired_giou, positive_weights


def _batch(b=4, c=3, t=6, has_image=None, has_text=None):
    g = torch.Generator().manual_seed(0)
    return {
        "labels": (torch.rand(b, c, generator=g) > 0.5).float(),
        "has_image": torch.ones(b, dtype=torch.bool) if has_image is None else has_image,
        "has_text": torch.ones(b, dtype=torch.bool) if has_text is None else has_text,
        "boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5]]).repeat(b, c, 1),
        "box_mask": torch.zeros(b, c, dtype=torch.bool),
        "target_ids": torch.randint(4, 20, (b, t), generator=g),
    }


def test_paired_giou_known_values():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert paired_giou(a, a).item() == pytest.approx(1.0, abs=1e-6)
    # disjoint unit boxes two apart: IoU 0, enclosing area 3, union 2 -> GIoU = -1/3
    b = torch.tensor([[2.0, 0.0, 3.0, 1.0]])
    assert paired_giou(a, b).item() == pytest.approx(-1.0 / 3.0, abs=1e-6)
    # half overlap: inter 0.5, union 1.5, enclosing 1.5 -> 1/3
    c = torch.tensor([[0.5, 0.0, 1.5, 1.0]])
    assert paired_giou(a, c).item() == pytest.approx(1.0 / 3.0, abs=1e-6)


def test_positive_weights_ratio_and_clipping():
    labels = torch.tensor([[1, 0, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=torch.float32)
    w = positive_weights(labels, max_weight=10.0)
    assert w[0] == pytest.approx(3.0)  # 3 negatives / 1 positive
    assert w[1] == pytest.approx(10.0)  # no positives -> the cap
    assert w[2] == pytest.approx(1.0)  # 1 / 3 clipped up to 1


def test_classification_loss_matches_bce_with_pos_weight():
    cfg = TrainConfig(class_imbalance="pos_weight")
    loss = MultitaskLoss(cfg, num_labels=3, pad_id=0, pos_weight=[2.0, 1.0, 5.0])
    logits = torch.randn(4, 3)
    labels = _batch()["labels"]
    expected = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor([2.0, 1.0, 5.0]))
    assert loss.classification_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_down_weights_easy_examples():
    focal = MultitaskLoss(TrainConfig(class_imbalance="focal", focal_gamma=2.0), num_labels=1, pad_id=0)
    plain = MultitaskLoss(TrainConfig(class_imbalance="none"), num_labels=1, pad_id=0)
    easy, hard = torch.tensor([[4.0]]), torch.tensor([[-1.0]])
    y = torch.ones(1, 1)
    ratio_easy = focal.classification_loss(easy, y) / plain.classification_loss(easy, y)
    ratio_hard = focal.classification_loss(hard, y) / plain.classification_loss(hard, y)
    assert ratio_easy < ratio_hard


def test_auxiliary_losses_ignore_samples_without_that_modality():
    cfg = TrainConfig(class_imbalance="none")
    loss = MultitaskLoss(cfg, num_labels=3, pad_id=0)
    batch = _batch(has_image=torch.tensor([True, True, False, False]))
    image_logits = torch.zeros(4, 3, requires_grad=True)
    out = ModelOutput(logits=torch.zeros(4, 3), image_logits=image_logits)
    loss(out, batch).total.backward()
    assert image_logits.grad[:2].abs().sum() > 0
    assert image_logits.grad[2:].abs().sum() == 0


def test_modality_dropout_hidden_image_is_not_trained_by_aux_or_boxes():
    loss = MultitaskLoss(TrainConfig(class_imbalance="none"), num_labels=3, pad_id=0)
    batch = _batch()
    batch["box_list"] = torch.tensor([[[0.1, 0.1, 0.5, 0.5]]]).repeat(4, 1, 1)
    batch["box_labels"] = torch.zeros(4, 1, dtype=torch.long)
    image_logits = torch.zeros(4, 3, requires_grad=True)
    maps = [torch.zeros(4, k, 8, 8, requires_grad=True) for k in (3, 2, 2)]
    localization = LocalizationOutput(boxes=torch.zeros(4, 3, 4), scores=torch.zeros(4, 3), heatmaps=maps[0],
                                      log_sizes=maps[1], offsets=maps[2] + 0.5)  # fmt: skip
    seen = torch.tensor([True, False, True, False])
    out = ModelOutput(logits=torch.zeros(4, 3), image_logits=image_logits, localization=localization,
                      image_present=seen)  # fmt: skip
    loss(out, batch).total.backward()
    assert image_logits.grad[~seen].abs().sum() == 0 and image_logits.grad[seen].abs().sum() > 0
    for tensor in maps:
        assert tensor.grad[~seen].abs().sum() == 0 and tensor.grad[seen].abs().sum() > 0


def test_generation_loss_ignores_padding_and_is_log_vocab_for_uniform_logits():
    loss = MultitaskLoss(TrainConfig(), num_labels=3, pad_id=0)
    target = torch.tensor([[2, 5, 6, 3, 0, 0]])
    vocab = 10
    uniform = torch.zeros(1, 5, vocab)
    assert loss.generation_loss(uniform, target).item() == pytest.approx(math.log(vocab), rel=1e-6)
    # changing logits at padded positions leaves the loss unchanged
    changed = uniform.clone()
    changed[0, 3:, :] = torch.randn(2, vocab)
    assert loss.generation_loss(changed, target).item() == pytest.approx(math.log(vocab), rel=1e-6)


def test_total_is_weighted_sum_of_parts():
    cfg = TrainConfig(class_imbalance="none")
    cfg.loss_weights.classification = 2.0
    cfg.loss_weights.generation = 0.5
    loss = MultitaskLoss(cfg, num_labels=3, pad_id=0)
    batch = _batch()
    out = ModelOutput(logits=torch.randn(4, 3), caption_logits=torch.randn(4, 5, 20))
    result = loss(out, batch)
    expected = 2.0 * result.parts["classification"] + 0.5 * result.parts["generation"]
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_alignment_loss_is_info_nce_over_the_pairs_the_model_saw():
    from medmodal.models.contrastive import info_nce_loss

    loss = MultitaskLoss(TrainConfig(class_imbalance="none"), num_labels=3, pad_id=0)
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(4, 8, generator=g), dim=-1).requires_grad_()
    text = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    seen = torch.tensor([True, True, False, True])
    out = ModelOutput(logits=torch.zeros(4, 3), image_embedding=image, text_embedding=text,
                      alignment_scale=scale, image_present=seen)  # fmt: skip
    result = loss(out, _batch())
    assert result.parts["alignment"].item() == pytest.approx(
        info_nce_loss(image[seen], text[seen], scale).item()
    )
    result.total.backward()
    assert image.grad[2].abs().sum() == 0 and image.grad[seen].abs().sum() > 0
    # identical pairs with a sharp temperature: near-zero loss; swapped pairs: large
    aligned = ModelOutput(logits=torch.zeros(4, 3), image_embedding=text, text_embedding=text,
                          alignment_scale=torch.tensor(100.0))  # fmt: skip
    assert loss(aligned, _batch()).parts["alignment"].item() < 0.05
    swapped = ModelOutput(logits=torch.zeros(4, 3), image_embedding=text.flip(0), text_embedding=text,
                          alignment_scale=torch.tensor(100.0))  # fmt: skip
    assert loss(swapped, _batch()).parts["alignment"].item() > 1.0


def test_alignment_loss_is_zero_with_fewer_than_two_pairs():
    loss = MultitaskLoss(TrainConfig(class_imbalance="none"), num_labels=3, pad_id=0)
    emb = F.normalize(torch.randn(4, 8), dim=-1)
    out = ModelOutput(logits=torch.zeros(4, 3), image_embedding=emb, text_embedding=emb,
                      alignment_scale=torch.tensor(10.0), text_present=torch.tensor([True, False, False, False]))  # fmt: skip
    assert loss(out, _batch()).parts["alignment"].item() == 0.0
