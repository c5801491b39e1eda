"""The dense localization head (medmodal.models.localization): maps, top boxes, detection."""

import pytest
import torch

from medmodal.models.localization import LocalizationHead, decode_boxes, decode_class_boxes
from medmodal.models.types import LocalizationOutput

from .helpers import assert_all_params_get_grad


def _head(**kw) -> LocalizationHead:
    return LocalizationHead(grid_dim=6, context_dim=5, num_labels=3, hidden_dim=8, **kw)


def test_dense_maps_at_stride_8_and_valid_top_boxes():
    head = _head().train()
    grid, context = torch.randn(4, 6, 4, 4) * 30, torch.randn(4, 5) * 30  # extreme inputs too
    out = head(grid, context, torch.randn(4, 1, 64, 64) * 30)
    assert out.heatmaps.shape == (4, 3, 8, 8)  # 64 px / stride 8, whatever the grid's size
    assert out.log_sizes.shape == out.offsets.shape == (4, 2, 8, 8)
    assert out.boxes.shape == (4, 3, 4) and out.scores.shape == (4, 3)
    boxes = out.boxes
    assert torch.isfinite(boxes).all() and ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()
    assert ((out.offsets >= 0) & (out.offsets <= 1)).all()


def test_stride_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        _head(stride=6)


def test_gradient_reaches_grid_context_image_and_every_parameter():
    head = _head()
    torch.nn.init.normal_(head.film.weight)  # FiLM starts as the identity: no gradient to the context yet
    grid = torch.randn(2, 6, 4, 4, requires_grad=True)
    context = torch.randn(2, 5, requires_grad=True)
    image = torch.randn(2, 1, 32, 32, requires_grad=True)
    out = head(grid, context, image)
    (out.heatmaps.square().mean() + out.log_sizes.mean() + out.offsets.mean()).backward()
    assert_all_params_get_grad(head)
    for x in (grid, context, image):
        assert x.grad.abs().sum() > 0


def test_decode_boxes_reads_centre_from_cell_and_offset_and_size_from_log_cells():
    offsets = torch.zeros(1, 2, 4, 4)
    log_sizes = torch.full((1, 2, 4, 4), -30.0)  # clamped to the smallest size
    offsets[0, :, 2, 1] = torch.tensor([0.5, 0.25])  # cell row 2, column 1
    log_sizes[0, :, 2, 1] = torch.log(torch.tensor([2.0, 1.0]))  # 2 cells wide, 1 tall
    box = decode_boxes(offsets, log_sizes)[0, 2, 1]
    # centre x = (1 + 0.5) / 4, y = (2 + 0.25) / 4; half sizes 1 / 4 and 0.5 / 4
    assert torch.allclose(box, torch.tensor([0.125, 0.4375, 0.625, 0.6875]))


def _output_with_peaks(peaks: list[tuple[int, int, int, float]], size: int = 8) -> LocalizationOutput:
    """One study; (class, row, col, logit) peaks on otherwise very low heatmaps, 1-cell boxes."""
    heat = torch.full((1, 3, size, size), -20.0)
    for c, r, col, logit in peaks:
        heat[0, c, r, col] = logit
    offsets = torch.full((1, 2, size, size), 0.5)
    log_sizes = torch.zeros(1, 2, size, size)
    return LocalizationOutput(boxes=torch.zeros(1, 3, 4), scores=torch.zeros(1, 3), heatmaps=heat,
                              log_sizes=log_sizes, offsets=offsets)  # fmt: skip


def test_detect_gives_several_scored_boxes_per_finding_best_first_and_pads():
    head = _head(max_detections=5)
    out = _output_with_peaks([(0, 1, 1, 3.0), (0, 5, 6, 1.0), (2, 3, 3, 2.0)])
    det = head.detect(out)
    assert det.boxes.shape == (1, 5, 4) and det.labels.shape == det.scores.shape == (1, 5)
    assert det.labels[0].tolist() == [0, 2, 0, -1, -1]  # two nodules, one other finding
    assert torch.allclose(det.scores[0, :3], torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))
    assert torch.allclose(det.boxes[0, 0], torch.tensor([1.0, 1.0, 2.0, 2.0]) / 8)
    assert (det.scores[0, 3:] == 0).all()


def test_detect_suppresses_overlapping_boxes_of_one_finding_only():
    head = _head(max_detections=10, nms_iou=0.3)
    out = _output_with_peaks([(0, 2, 2, 3.0), (0, 2, 4, 2.0), (1, 2, 4, 2.5)])
    out.log_sizes[:] = torch.log(torch.tensor(4.0))  # 4-cell boxes: peaks 2 cells apart overlap (IoU 1/3)
    det = head.detect(out)
    kept = [(int(c), round(float(s), 3)) for c, s in zip(det.labels[0], det.scores[0]) if c >= 0]
    # class 0's weaker box overlaps its stronger one and goes; class 1's identical box stays
    assert kept == [(0, round(float(torch.sigmoid(torch.tensor(3.0))), 3)),
                    (1, round(float(torch.sigmoid(torch.tensor(2.5))), 3))]  # fmt: skip


def test_detect_drops_low_scores_and_non_peaks():
    head = _head(max_detections=10, min_score=0.1)
    out = _output_with_peaks([(0, 4, 4, 2.0), (0, 4, 5, 1.0), (1, 0, 0, -3.0)])
    det = head.detect(out)
    # (4, 5) is next to the stronger (4, 4): not a 3x3 peak; class 1 scores sigmoid(-3) < 0.1
    assert det.labels[0].tolist().count(-1) == 9 and int(det.labels[0, 0]) == 0


def test_top_box_per_finding_is_the_box_at_its_highest_cell():
    head = _head().eval()
    grid, context, image = torch.randn(2, 6, 4, 4), torch.randn(2, 5), torch.randn(2, 1, 64, 64)
    out = head(grid, context, image)
    dense = decode_boxes(out.offsets, out.log_sizes)  # [B, h, w, 4]
    for b in range(2):
        for c in range(3):
            cell = int(out.heatmaps[b, c].flatten().argmax())
            assert torch.allclose(out.boxes[b, c], dense[b].reshape(-1, 4)[cell])
            assert torch.isclose(out.scores[b, c], torch.sigmoid(out.heatmaps[b, c].max()))


def test_score_must_be_known():
    with pytest.raises(ValueError, match="score must be one of"):
        _head(score="probability")


def test_heatmap_x_probability_scales_scores_by_the_classifier_and_reorders_detections():
    head = _head(max_detections=5, score="heatmap_x_probability")
    out = _output_with_peaks([(0, 1, 1, 3.0), (2, 3, 3, 2.0)])
    gate = torch.tensor([[0.1, 0.5, 0.9]])  # the classifier doubts class 0, believes class 2
    out.score_gate = gate
    det = head.detect(out)
    assert det.labels[0, :2].tolist() == [2, 0]  # the heatmap alone ranks class 0 first
    expected = torch.sigmoid(torch.tensor([2.0, 3.0])) * torch.tensor([0.9, 0.1])
    assert torch.allclose(det.scores[0, :2], expected)


def test_forward_sets_the_gate_only_when_asked_and_given_logits():
    grid, context, image = torch.randn(2, 6, 4, 4), torch.randn(2, 5), torch.randn(2, 1, 32, 32)
    logits = torch.randn(2, 3, requires_grad=True)
    plain = _head().eval()
    assert plain(grid, context, image, logits).score_gate is None
    gated = _head(score="heatmap_x_probability").eval()
    gated.load_state_dict(plain.state_dict())
    out = gated(grid, context, image, logits)
    assert torch.allclose(out.score_gate, torch.sigmoid(logits)) and not out.score_gate.requires_grad
    assert torch.allclose(out.scores, plain(grid, context, image).scores * torch.sigmoid(logits))
    assert gated(grid, context, image).score_gate is None  # no logits: heatmap scores


@pytest.mark.parametrize("stride", [4, 8])
def test_stride_sets_the_map_size(stride):
    out = _head(stride=stride)(torch.randn(1, 6, 4, 4), torch.randn(1, 5), torch.randn(1, 1, 64, 64))
    assert out.heatmaps.shape[-2:] == (64 // stride, 64 // stride)


def test_model_config_reaches_the_head():
    from medmodal.config import Config, ConfigError, apply_overrides
    from medmodal.models.multimodal import create_model

    cfg = apply_overrides(Config(), {"model.localization.stride": 4, "model.localization.score": "heatmap_x_probability",
                                     "model.localization.nms_iou": 0.3, "model.image_encoder.name": "small_cnn"})  # fmt: skip
    model = create_model(cfg.model, vocab_size=20, num_labels=3, pad_id=0, bos_id=1, eos_id=2)
    head = model.localizer
    assert (head.stride, head.score, head.nms_iou) == (4, "heatmap_x_probability", 0.3)
    batch = {"image": torch.rand(2, 1, 64, 64), "has_image": torch.ones(2, dtype=torch.bool),
             "text_ids": torch.randint(3, 20, (2, 5)), "text_mask": torch.ones(2, 5, dtype=torch.bool),
             "has_text": torch.ones(2, dtype=torch.bool)}  # fmt: skip
    out = model.eval()(batch)
    assert out.localization.heatmaps.shape[-2:] == (16, 16)
    assert torch.allclose(out.localization.score_gate, torch.sigmoid(out.logits))
    with pytest.raises(ConfigError, match="stride"):
        apply_overrides(Config(), {"model.localization.stride": 6})


def test_per_finding_size_maps_give_one_size_pair_per_finding_and_shared_offsets():
    shared, per_finding = _head(), _head(size_maps="per_finding")
    assert shared.size.out_channels == 2 and per_finding.size.out_channels == 2 * 3
    assert [n for n, _ in shared.named_parameters()] == [n for n, _ in per_finding.named_parameters()]
    out = per_finding.train()(torch.randn(4, 6, 4, 4), torch.randn(4, 5), torch.randn(4, 1, 64, 64))
    assert out.log_sizes.shape == (4, 6, 8, 8) and out.offsets.shape == (4, 2, 8, 8)
    assert out.boxes.shape == (4, 3, 4) and torch.isfinite(out.boxes).all()
    with pytest.raises(ValueError, match="size_maps must be one of"):
        _head(size_maps="per_class")


def test_per_finding_top_box_reads_its_own_finding_s_size_map():
    head = _head(size_maps="per_finding").eval()
    out = head(torch.randn(2, 6, 4, 4), torch.randn(2, 5), torch.randn(2, 1, 64, 64))
    dense = decode_class_boxes(out.offsets, out.log_sizes)  # [B, C, h, w, 4]
    assert dense.shape == (2, 3, 8, 8, 4)
    for b in range(2):
        for c in range(3):
            cell = int(out.heatmaps[b, c].flatten().argmax())
            size = out.log_sizes[b, 2 * c : 2 * c + 2].flatten(1)[:, cell]
            own = decode_boxes(out.offsets[b : b + 1], size[None, :, None, None].expand(1, 2, 8, 8))
            assert torch.allclose(out.boxes[b, c], own[0].reshape(-1, 4)[cell])


def test_shared_map_decodes_like_decode_boxes():
    offsets, log_sizes = torch.rand(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    assert torch.equal(decode_class_boxes(offsets, log_sizes)[:, 0], decode_boxes(offsets, log_sizes))


def test_detect_reads_each_finding_s_own_size_at_a_shared_centre():
    head = _head(max_detections=5, size_maps="per_finding")
    out = _output_with_peaks([(0, 4, 4, 3.0), (2, 4, 4, 2.0)])  # two findings, one centre cell
    out.log_sizes = torch.zeros(1, 6, 8, 8)  # 1-cell boxes ...
    out.log_sizes[0, 4:6] = torch.log(torch.tensor(4.0))  # ... but 4-cell boxes for finding 2
    det = head.detect(out)
    assert det.labels[0, :2].tolist() == [0, 2]
    assert torch.allclose(det.boxes[0, 0], torch.tensor([4.0, 4.0, 5.0, 5.0]) / 8)
    assert torch.allclose(det.boxes[0, 1], torch.tensor([2.5, 2.5, 6.5, 6.5]) / 8)


def test_size_maps_config_reaches_the_head():
    from medmodal.config import Config, apply_overrides
    from medmodal.models.multimodal import create_model

    assert Config().model.localization.size_maps == "shared"
    cfg = apply_overrides(Config(), {"model.localization.size_maps": "per_finding"})
    model = create_model(cfg.model, vocab_size=20, num_labels=3, pad_id=0, bos_id=1, eos_id=2)
    assert model.localizer.size_maps == "per_finding" and model.localizer.size.out_channels == 6
