"""The multi-task loss: classification + auxiliary unimodal + localization + generation.

Shapes: B = batch, C = finding labels, T = target length, V = vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss
from torch import Tensor, nn

from medmodal.config import TrainConfig
from medmodal.models.contrastive import info_nce_loss
from medmodal.models.localization import LOG_SIZE_RANGE, decode_class_boxes
from medmodal.models.types import LocalizationOutput, ModelOutput


def paired_giou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Generalised IoU of corresponding boxes (not all pairs), xyxy: [N, 4], [N, 4] -> [N].

    Hand-written: MONAI's ``box_giou`` computes the full N x M matrix (wasteful for
    paired boxes) and torchvision's paired version cannot be installed here.
    """
    x0 = torch.maximum(pred[:, 0], target[:, 0])
    y0 = torch.maximum(pred[:, 1], target[:, 1])
    x1 = torch.minimum(pred[:, 2], target[:, 2])
    y1 = torch.minimum(pred[:, 3], target[:, 3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area_p = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_t = (target[:, 2] - target[:, 0]).clamp(min=0) * (target[:, 3] - target[:, 1]).clamp(min=0)
    union = area_p + area_t - inter
    iou = inter / (union + eps)
    hull = (torch.maximum(pred[:, 2], target[:, 2]) - torch.minimum(pred[:, 0], target[:, 0])) * (
        torch.maximum(pred[:, 3], target[:, 3]) - torch.minimum(pred[:, 1], target[:, 1])
    )
    return iou - (hull - union) / (hull + eps)


def gaussian_radius(height: Tensor, width: Tensor, min_overlap: float = 0.7) -> Tensor:
    """CenterNet's radius (in cells) of the disc of centre shifts that keep a box of this
    ``height`` x ``width`` (cells) at IoU >= ``min_overlap`` with itself (the smallest of the three
    cases of CornerNet's ``gaussian_radius``); any shape -> same shape."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


@dataclass
class CentreTargets:
    """Training targets of the dense localization head on its h x w map.

    heatmap: [B, C, h, w] in [0, 1], 1 exactly at each box's centre cell (max over overlapping boxes).
    cells:   [B, M, 2] long (column, row) of each box's centre cell.
    offsets: [B, M, 2] the centre's position inside that cell, in [0, 1).
    valid:   [B, M] bool, a real box (label >= 0).
    """

    heatmap: Tensor
    cells: Tensor
    offsets: Tensor
    valid: Tensor


def centre_targets(
    box_list: Tensor, box_labels: Tensor, num_labels: int, height: int, width: int, min_overlap: float = 0.7
) -> CentreTargets:
    """CenterNet targets from every box of each study: box_list [B, M, 4] normalised xyxy,
    box_labels [B, M] (-1 = padding) -> :class:`CentreTargets` for an ``height`` x ``width`` map.

    Each box puts a Gaussian on its class's map, centred on the cell holding its centre, with
    sigma = (2 r + 1) / 6 for r = :func:`gaussian_radius` of its size in cells at ``min_overlap`` (at least 0).
    """
    valid = box_labels >= 0
    size = torch.tensor([width, height], dtype=box_list.dtype, device=box_list.device)
    centre = (box_list[..., :2] + box_list[..., 2:]) / 2 * size  # [B, M, 2] in cells
    cells = torch.minimum(centre.floor(), size - 1).clamp(min=0)
    wh = (box_list[..., 2:] - box_list[..., :2]) * size
    radius = gaussian_radius(wh[..., 1], wh[..., 0], min_overlap).clamp(min=0).floor()
    sigma = (2 * radius + 1) / 6  # [B, M]
    xs = torch.arange(width, dtype=box_list.dtype, device=box_list.device)
    ys = torch.arange(height, dtype=box_list.dtype, device=box_list.device)
    dx2 = (xs[None, None, :] - cells[..., 0:1]) ** 2  # [B, M, w]
    dy2 = (ys[None, None, :] - cells[..., 1:2]) ** 2  # [B, M, h]
    blobs = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma[..., None, None] ** 2))
    blobs = blobs * valid[..., None, None]  # [B, M, h, w]
    onehot = F.one_hot(box_labels.clamp(min=0), num_labels).to(blobs.dtype) * valid[..., None]  # [B, M, C]
    heatmap = (blobs[:, :, None] * onehot[..., None, None]).amax(dim=1)  # [B, C, h, w]
    return CentreTargets(heatmap=heatmap, cells=cells.long(), offsets=centre - cells, valid=valid)


def centre_focal_loss(
    logits: Tensor, target: Tensor, mask: Tensor, alpha: float = 2.0, beta: float = 4.0
) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed over the maps kept by ``mask`` [B, C] and divided
    by their number of centres (at least one). logits, target: [B, C, h, w]."""
    keep = mask[..., None, None].to(logits.dtype)
    positive = (target >= 1.0).to(logits.dtype) * keep
    prob = torch.sigmoid(logits)
    pos = -F.logsigmoid(logits) * (1 - prob) ** alpha * positive
    neg = -F.logsigmoid(-logits) * prob**alpha * (1 - target) ** beta * (keep - positive)
    return (pos.sum() + neg.sum()) / positive.sum().clamp(min=1.0)


def log_size_l1(log_sizes: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Mean L1 between predicted log box sizes [K, 2] (log cells, width then height) and those of the
    true boxes [K, 4] (normalised xyxy) on an ``height`` x ``width`` map; targets clamped to the
    head's decodable range (:data:`~medmodal.models.localization.LOG_SIZE_RANGE`)."""
    cells = torch.tensor([width, height], dtype=boxes.dtype, device=boxes.device)
    target = ((boxes[:, 2:] - boxes[:, :2]) * cells).clamp(min=1e-6).log().clamp(*LOG_SIZE_RANGE)
    return F.l1_loss(log_sizes, target)


@dataclass
class LossParts:
    total: Tensor
    parts: dict[str, Tensor]


class MultitaskLoss(nn.Module):
    """Weighted sum of the task losses of a :class:`ModelOutput` against a batch.

    - classification: BCE with ``pos_weight`` (class imbalance) or sigmoid focal loss (MONAI);
    - auxiliary: the same loss on the unimodal heads' logits, only on samples that
      have that modality (counters modality competition: each encoder must learn alone);
    - localization (dense CenterNet head): penalty-reduced focal loss on the centre heatmaps
      (``centre_focal_loss``; a finding labelled present without a box is left out of its map)
      + L1 on the centre offsets + (1 - GIoU) of the box read at each true centre (from the box's
      own finding's size map with ``model.localization.size_maps: per_finding``), over every
      box of the studies whose image the model saw (``box_list`` / ``box_labels``);
    - generation: token cross-entropy under teacher forcing, padding ignored;
    - alignment (coordinated models only): symmetric InfoNCE between each study's image and
      report embeddings, over the pairs the model saw.
    """

    pos_weight: Tensor  # buffer [C]

    def __init__(
        self, train_cfg: TrainConfig, num_labels: int, pad_id: int, pos_weight: list[float] | None = None
    ):
        super().__init__()
        self.weights = train_cfg.loss_weights
        self.mode = train_cfg.class_imbalance
        self.pad_id = pad_id
        pw = (
            torch.tensor(pos_weight, dtype=torch.float32)
            if pos_weight is not None
            else torch.ones(num_labels)
        )
        self.register_buffer("pos_weight", pw, persistent=False)
        self.focal = FocalLoss(
            gamma=train_cfg.focal_gamma, use_softmax=False, to_onehot_y=False, reduction="none"
        )
        self.gaussian_overlap = train_cfg.localization_gaussian_overlap
        self.log_size_weight = train_cfg.localization_log_size_weight

    def classification_loss(self, logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> Tensor:
        """Mean over kept samples of the per-sample multi-label loss. logits, labels: [B, C]; keep: [B] bool."""
        if self.mode == "focal":
            per_entry = self.focal(logits, labels)
        else:
            pos_weight = self.pos_weight if self.mode == "pos_weight" else None
            per_entry = F.binary_cross_entropy_with_logits(
                logits, labels, pos_weight=pos_weight, reduction="none"
            )
        per_sample = per_entry.mean(dim=1)
        if keep is None:
            return per_sample.mean()
        if not keep.any():
            return logits.sum() * 0.0
        return per_sample[keep].mean()

    def localization_loss(self, out: LocalizationOutput, batch: dict, image_seen: Tensor) -> Tensor:
        """Dense localization loss (class docstring). image_seen: [B] bool."""
        _, c, h, w = out.heatmaps.shape
        labels = batch["box_labels"].masked_fill(~image_seen[:, None], -1)
        targets = centre_targets(
            batch["box_list"].to(out.heatmaps.dtype), labels, c, h, w, self.gaussian_overlap
        )
        has_box = F.one_hot(labels.clamp(min=0), c).bool() & targets.valid[..., None]  # [B, M, C]
        unboxed_positive = (batch["labels"] > 0) & ~has_box.any(dim=1)
        heat = centre_focal_loss(out.heatmaps, targets.heatmap, image_seen[:, None] & ~unboxed_positive)
        if not targets.valid.any():
            return heat + out.offsets.sum() * 0.0 + out.log_sizes.sum() * 0.0
        rows, slots = torch.nonzero(targets.valid, as_tuple=True)
        col, row = targets.cells[rows, slots, 0], targets.cells[rows, slots, 1]
        offsets = out.offsets[rows, :, row, col]  # [K, 2]
        dense = decode_class_boxes(out.offsets, out.log_sizes)  # [B, K, h, w, 4], K = 1 or C
        # the size map each box is read from: the shared one, or its own finding's (per_finding)
        size_map = labels[rows, slots] if dense.shape[1] > 1 else 0
        pred = dense[rows, size_map, row, col]
        true = batch["box_list"][rows, slots].to(pred.dtype)
        offset = F.l1_loss(offsets, targets.offsets[rows, slots])
        loss = heat + offset + (1.0 - paired_giou(pred, true)).mean()
        if self.log_size_weight > 0:
            sizes = out.log_sizes.unflatten(1, (-1, 2))[rows, size_map, :, row, col]  # [K, 2]
            loss = loss + self.log_size_weight * log_size_l1(sizes, true, h, w)
        return loss

    def generation_loss(self, caption_logits: Tensor, target_ids: Tensor) -> Tensor:
        """caption_logits: [B, T-1, V] predicting target_ids[:, 1:]; target_ids: [B, T]."""
        gold = target_ids[:, 1:]
        return F.cross_entropy(
            caption_logits.reshape(-1, caption_logits.shape[-1]), gold.reshape(-1), ignore_index=self.pad_id
        )

    def alignment_loss(self, out: ModelOutput, pair_seen: Tensor) -> Tensor:
        """Symmetric InfoNCE over the studies whose image and report the model both saw
        (the other studies of the batch are the negatives); zero with fewer than two pairs."""
        # called with embeddings only (forward); a coordinated model returns all three together
        assert (
            out.image_embedding is not None
            and out.text_embedding is not None
            and out.alignment_scale is not None
        )
        if int(pair_seen.sum()) < 2:
            return out.image_embedding.sum() * 0.0
        return info_nce_loss(
            out.image_embedding[pair_seen], out.text_embedding[pair_seen], out.alignment_scale
        )

    def forward(self, out: ModelOutput, batch: dict) -> LossParts:
        labels = batch["labels"].float()
        w = self.weights
        assert out.logits is not None  # config-built models always classify (HeadsConfig.classification)
        parts: dict[str, Tensor] = {"classification": self.classification_loss(out.logits, labels)}
        total = w.classification * parts["classification"]
        aux = []
        image_seen = _seen(out.image_present, batch["has_image"])
        text_seen = _seen(out.text_present, batch["has_text"])
        if out.image_logits is not None:
            aux.append(self.classification_loss(out.image_logits, labels, image_seen))
        if out.text_logits is not None:
            aux.append(self.classification_loss(out.text_logits, labels, text_seen))
        if aux and w.auxiliary > 0:
            parts["auxiliary"] = torch.stack(aux).mean()
            total = total + w.auxiliary * parts["auxiliary"]
        if out.localization is not None and w.localization > 0:
            parts["localization"] = self.localization_loss(out.localization, batch, image_seen)
            total = total + w.localization * parts["localization"]
        if out.caption_logits is not None and w.generation > 0:
            parts["generation"] = self.generation_loss(out.caption_logits, batch["target_ids"])
            total = total + w.generation * parts["generation"]
        if out.image_embedding is not None and w.alignment > 0:
            parts["alignment"] = self.alignment_loss(out, image_seen & text_seen)
            total = total + w.alignment * parts["alignment"]
        return LossParts(total=total, parts=parts)


def _seen(present: Tensor | None, available: Tensor) -> Tensor:
    """[B] bool: the model saw the modality (in the batch and not hidden by modality dropout)."""
    return available.bool() if present is None else present.bool() & available.bool()


def positive_weights(label_matrix: Tensor, max_weight: float = 50.0) -> list[float]:
    """BCE ``pos_weight`` per label = negatives / positives on the training set, clipped.

    label_matrix: [N, C] multi-hot. Labels without positives get ``max_weight``.
    """
    pos = label_matrix.sum(dim=0)
    neg = label_matrix.shape[0] - pos
    weight = torch.where(pos > 0, neg / pos.clamp(min=1), torch.full_like(pos, max_weight))
    return weight.clamp(min=1.0, max=max_weight).tolist()
