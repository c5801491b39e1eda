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
from medmodal.models.types import ModelOutput


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


@dataclass
class LossParts:
    total: Tensor
    parts: dict[str, Tensor]


class MultitaskLoss(nn.Module):
    """Weighted sum of the task losses of a :class:`ModelOutput` against a batch.

    - classification: BCE with ``pos_weight`` (class imbalance) or sigmoid focal loss (MONAI);
    - auxiliary: the same loss on the unimodal heads' logits, only on samples that
      have that modality (counters modality competition: each encoder must learn alone);
    - localization: L1 + (1 - GIoU) on boxes of findings present (``box_mask``);
    - generation: token cross-entropy under teacher forcing, padding ignored;
    - alignment (coordinated models only): symmetric InfoNCE between each study's image and
      report embeddings, over the pairs the model saw.
    """

    def __init__(self, train_cfg: TrainConfig, num_labels: int, pad_id: int, pos_weight: list[float] | None = None):
        super().__init__()
        self.weights = train_cfg.loss_weights
        self.mode = train_cfg.class_imbalance
        self.pad_id = pad_id
        pw = torch.tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else torch.ones(num_labels)
        self.register_buffer("pos_weight", pw, persistent=False)
        self.focal = FocalLoss(gamma=train_cfg.focal_gamma, use_softmax=False, to_onehot_y=False, reduction="none")

    def classification_loss(self, logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> Tensor:
        """Mean over kept samples of the per-sample multi-label loss. logits, labels: [B, C]; keep: [B] bool."""
        if self.mode == "focal":
            per_entry = self.focal(logits, labels)
        else:
            pos_weight = self.pos_weight if self.mode == "pos_weight" else None
            per_entry = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight, reduction="none")
        per_sample = per_entry.mean(dim=1)
        if keep is None:
            return per_sample.mean()
        if not keep.any():
            return logits.sum() * 0.0
        return per_sample[keep].mean()

    def localization_loss(self, boxes: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """boxes, target: [B, C, 4] normalised xyxy; mask: [B, C] bool (finding present with a box)."""
        if not mask.any():
            return boxes.sum() * 0.0
        pred, true = boxes[mask], target[mask]
        return F.l1_loss(pred, true) + (1.0 - paired_giou(pred, true)).mean()

    def generation_loss(self, caption_logits: Tensor, target_ids: Tensor) -> Tensor:
        """caption_logits: [B, T-1, V] predicting target_ids[:, 1:]; target_ids: [B, T]."""
        gold = target_ids[:, 1:]
        return F.cross_entropy(caption_logits.reshape(-1, caption_logits.shape[-1]), gold.reshape(-1), ignore_index=self.pad_id)

    def alignment_loss(self, out: ModelOutput, pair_seen: Tensor) -> Tensor:
        """Symmetric InfoNCE over the studies whose image and report the model both saw
        (the other studies of the batch are the negatives); zero with fewer than two pairs."""
        if int(pair_seen.sum()) < 2:
            return out.image_embedding.sum() * 0.0
        return info_nce_loss(out.image_embedding[pair_seen], out.text_embedding[pair_seen], out.alignment_scale)

    def forward(self, out: ModelOutput, batch: dict) -> LossParts:
        labels = batch["labels"].float()
        w = self.weights
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
        if out.boxes is not None and w.localization > 0:
            mask = batch["box_mask"] & image_seen[:, None]
            parts["localization"] = self.localization_loss(out.boxes, batch["boxes"], mask)
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
