"""The simple baseline of text-guided segmentation: the report's findings painted with their mean
training masks (``medmodal segment baseline``).

The text-guided U-Net (:mod:`medmodal.tasks.segmentation`) reads the report, which states the
findings; this baseline reads the same findings (the study's labels, extracted from its report)
and knows nothing of the image:

1. **fit** (training split): for each finding class k, the share of the training studies with
   finding k whose label map has class k at each pixel (the mean mask, [K-1, S, S]);
2. **choose** (validation split): per class, the threshold on that share (0.05 ... 0.95) whose
   painted masks give the best mean Dice over the validation studies that have the class;
3. **predict**: for each study, the classes its labels state, each painted where its mean mask
   reaches its threshold, larger mean regions first so smaller ones stay visible on overlap.

Scored with the U-Net's metrics (:func:`~medmodal.tasks.segmentation.segmentation_metrics`) on the
same studies, so the two tables compare like for like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmodal.data.pipeline import label_matrix
from medmodal.data.types import Study
from medmodal.tasks import common
from medmodal.tasks.segmentation import SegmentationScores, class_names_of, mask_path, read_label_map

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))


def label_maps(studies: Sequence[Study], manifest_path: Path, size: int, num_classes: int) -> Tensor:
    """The studies' label maps, long [N, size, size] (nearest-neighbour resize)."""
    return torch.stack([
        read_label_map(mask_path(s, manifest_path.parent, str(manifest_path)), size, num_classes) for s in studies
    ])  # fmt: skip


def stated(studies: Sequence[Study], class_names: Sequence[str]) -> Tensor:
    """bool [N, K-1]: the finding classes each study's labels (from its report) state."""
    return label_matrix(list(studies), list(class_names)).bool()


def mean_masks(maps: Tensor, present: Tensor) -> Tensor:
    """[K-1, S, S]: per class, the share of the studies stating it whose map has it at each pixel
    (zeros for a class no study states). maps: long [N, S, S]; present: bool [N, K-1]."""
    shares = []
    for k in range(present.shape[1]):
        with_class = maps[present[:, k]]
        shares.append(
            (with_class == k + 1).float().mean(0) if len(with_class) else torch.zeros(maps.shape[1:])
        )
    return torch.stack(shares)


def paint(means: Tensor, thresholds: Sequence[float], present: Tensor) -> Tensor:
    """long [N, S, S]: each stated class painted where its mean mask reaches its threshold, classes
    with larger painted regions first (smaller ones stay visible on overlap)."""
    regions = means >= torch.tensor(thresholds)[:, None, None]  # [K-1, S, S]
    order = torch.argsort(regions.flatten(1).sum(1), descending=True, stable=True).tolist()
    out = torch.zeros(present.shape[0], *means.shape[1:], dtype=torch.long)
    for k in order:
        out[present[:, k][:, None, None] & regions[k]] = k + 1
    return out


def choose_thresholds(
    means: Tensor, maps: Tensor, present: Tensor, class_names: Sequence[str]
) -> list[float]:
    """Per class, the threshold of :data:`THRESHOLDS` with the best Dice over the studies that have
    the class (one class painted at a time; ties: the lower threshold; 0.5 for a class without cases)."""
    chosen = []
    for k, name in enumerate(class_names):
        best, best_dice = 0.5, -1.0
        for threshold in THRESHOLDS:
            alone = torch.zeros_like(present)
            alone[:, k] = present[:, k]
            scores = SegmentationScores(class_names)
            scores.update(paint(means, [threshold] * len(class_names), alone), maps)
            dice = scores.result()["per_class"][name]["dice"]
            if dice is not None and dice > best_dice:
                best, best_dice = threshold, dice
        chosen.append(best)
    return chosen


@dataclass
class BaselinePredictions:
    """The baseline's label maps of one split and the truth, long [N, S, S] each, in split order."""

    predicted: Tensor
    truth: Tensor
    class_names: list[str]
    thresholds: list[float]


def mean_mask_predictions(data: str | Path, *, size: int = 64, split: str = "test") -> BaselinePredictions:
    """Fit on ``data``'s training split, choose thresholds on its validation split, predict ``split``
    at ``size`` px (the U-Net's ``image_size``)."""
    manifest = common.read_task_manifest(data)
    class_names = class_names_of(manifest, data)
    num_classes = len(class_names) + 1
    parts = {}
    for name in ("train", "val", split):
        studies = manifest.split(name)
        if not studies:
            raise ValueError(
                f"{manifest.path}: split '{name}' is empty; the baseline needs train, val and {split}"
            )
        parts[name] = (label_maps(studies, manifest.path, size, num_classes), stated(studies, class_names))
    means = mean_masks(*parts["train"])
    thresholds = choose_thresholds(means, parts["val"][0], parts["val"][1], class_names)
    maps, present = parts[split]
    return BaselinePredictions(paint(means, thresholds, present), maps, class_names, thresholds)


def evaluate_mean_mask_baseline(data: str | Path, *, size: int = 64, split: str = "test") -> dict[str, Any]:
    """:func:`mean_mask_predictions` scored; returns metrics like ``medmodal segment evaluate``'s."""
    predictions = mean_mask_predictions(data, size=size, split=split)
    scores = SegmentationScores(predictions.class_names)
    scores.update(predictions.predicted, predictions.truth)
    return {
        "split": split,
        "data": str(Path(data).resolve()),
        "conditioning": "report findings + mean training mask (baseline)",
        "n_studies": len(predictions.truth),
        "thresholds": dict(zip(predictions.class_names, predictions.thresholds)),
        **scores.result(),
    }
