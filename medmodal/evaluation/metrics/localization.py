"""Lesion localization metrics: IoU between each true box and the predicted box of its class.

The model predicts one box per class and study (``pred_boxes [N, C, 4]``, the
``boxes`` contract of the batch dict); every ground-truth box is compared with
the predicted box of its class in the same study. IoU comes from MONAI
(``monai.data.box_utils.box_iou``, ``StandardMode`` = ``(x0, y0, x1, y1)``).

Coordinates: any space, as long as predictions and ground truth share it
(normalised ``[0, 1]`` of the stored image, as in the batch dict, or pixels).
They are continuous: area = ``(x1 - x0) * (y1 - y0)``, no "+1 pixel"
convention (unlike the PASCAL VOC devkit), so IoU is the same in both spaces
(to ~1e-5: MONAI works in float32).

A predicted box with negative width or height (an untrained head can produce
one) overlaps nothing: IoU 0. A true box like that is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medmodal.evaluation.metrics._arrays import as_numpy, mean_or_none

HIT_IOU = 0.5
# MONAI computes IoU in float32 with float32-eps added to the union, so an exact
# 0.5 overlap reads 0.49999994 in normalised coordinates (0.5 in pixels): the hit
# test allows for that, so it does not depend on the coordinate space.
_HIT_TOLERANCE = 1e-6


def _iou_pairs(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of ``true[k]`` with ``pred[k]`` for each k: ``[K, 4], [K, 4] -> [K]``."""
    from monai.data.box_utils import box_iou

    valid = (pred[:, 2] >= pred[:, 0]) & (pred[:, 3] >= pred[:, 1])
    out = np.zeros(len(true))
    if valid.any():
        # box_iou gives the [K, K] matrix; a study has a handful of boxes, so the diagonal is cheap.
        out[valid] = np.diag(np.asarray(box_iou(true[valid], pred[valid]), dtype=np.float64))
    return out


def localization_metrics(
    pred_boxes: Any,
    true_boxes: Sequence[Sequence[tuple[int, Sequence[float]]]],
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Mean IoU and hit rate (IoU >= 0.5) of predicted boxes against ground-truth boxes.

    Args:
        pred_boxes: float ``[N, C, 4]``: one ``(x0, y0, x1, y1)`` box per study and class.
        true_boxes: ``N`` lists (one per study, same order) of ``(class_index, (x0, y0, x1, y1))``.
            A study may have no boxes, or several boxes of one class (each is scored
            against the one predicted box of that class).
        label_names: ``C`` names for ``per_label`` (default ``label_0`` ...).

    Returns:
        ``{"iou_mean": mean IoU over all true boxes, "hit_at_0_5": share of true
        boxes with IoU >= 0.5, "n_boxes", "iou_mean_macro": mean of the per-label
        ``iou_mean`` over labels with boxes, "per_label": {name: {"iou_mean",
        "hit_at_0_5", "n_boxes"}}}``; means are ``None`` where there is no box.
    """
    pred = as_numpy(pred_boxes, "pred_boxes")
    if pred.ndim != 3 or pred.shape[2] != 4:
        raise ValueError(f"pred_boxes must be [N, C, 4], got {pred.shape}")
    n, c, _ = pred.shape
    if len(true_boxes) != n:
        raise ValueError(f"true_boxes has {len(true_boxes)} studies, pred_boxes {n}")
    names = list(label_names) if label_names is not None else [f"label_{i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"label_names has {len(names)} names for {c} classes")
    if not np.isfinite(pred).all():
        raise ValueError("pred_boxes contain NaN or inf")

    ious: list[float] = []
    classes: list[int] = []
    for i, study in enumerate(true_boxes):
        if not study:
            continue
        cls = []
        boxes = []
        for k, item in enumerate(study):
            try:
                label, box = item
                box = np.asarray(box, dtype=np.float64).reshape(4)
            except (TypeError, ValueError):
                raise ValueError(
                    f"true_boxes[{i}][{k}]: expected (class_index, (x0, y0, x1, y1)), got {item!r}"
                )
            if not 0 <= int(label) < c:
                raise ValueError(f"true_boxes[{i}][{k}]: class index {label} outside 0..{c - 1}")
            if not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]:
                raise ValueError(
                    f"true_boxes[{i}][{k}]: invalid box {box.tolist()} (need x0 <= x1, y0 <= y1)"
                )
            cls.append(int(label))
            boxes.append(box)
        ious.extend(_iou_pairs(np.stack(boxes), pred[i, cls]).tolist())
        classes.extend(cls)

    iou = np.asarray(ious)
    label_of = np.asarray(classes, dtype=np.int64)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        values = iou[mask]
        return {
            "iou_mean": float(values.mean()) if values.size else None,
            "hit_at_0_5": float((values >= HIT_IOU - _HIT_TOLERANCE).mean()) if values.size else None,
            "n_boxes": int(values.size),
        }

    overall = summary(np.ones(iou.shape, dtype=bool))
    per_label = {name: summary(label_of == j) for j, name in enumerate(names)}
    return {
        **overall,
        "iou_mean_macro": mean_or_none([v["iou_mean"] for v in per_label.values()]),
        "per_label": per_label,
    }
