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
from dataclasses import dataclass
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


def _checked_boxes(studies: Sequence[Sequence[Any]], c: int, name: str, *, scored: bool) -> list[list[tuple]]:
    """``studies`` validated: per study a list of (class index, float box [4]), the float score last
    when ``scored`` (detections). A true box (not ``scored``) needs x0 <= x1 and y0 <= y1; a detected
    one may be empty. Errors name the item: ``name[study][item]``."""
    expected = "(class_index, (x0, y0, x1, y1), score)" if scored else "(class_index, (x0, y0, x1, y1))"
    checked = []
    for i, study in enumerate(studies):
        rows = []
        for k, item in enumerate(study):
            where = f"{name}[{i}][{k}]"
            try:
                label, raw_box, *score = item
                if len(score) != int(scored):
                    raise ValueError(f"{len(score) + 2} values")
                box = np.asarray(raw_box, dtype=np.float64).reshape(4)
                score = [float(x) for x in score]
            except (TypeError, ValueError):
                raise ValueError(f"{where}: expected {expected}, got {item!r}") from None
            if not 0 <= int(label) < c:
                raise ValueError(f"{where}: class index {label} outside 0..{c - 1}")
            if scored and not (np.isfinite(box).all() and np.isfinite(score).all()):
                raise ValueError(f"{where}: NaN or inf in box or score")
            if not scored and (not np.isfinite(box).all() or box[2] < box[0] or box[3] < box[1]):
                raise ValueError(f"{where}: invalid box {box.tolist()} (need x0 <= x1, y0 <= y1)")
            rows.append((int(label), box, *score))
        checked.append(rows)
    return checked


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
    for i, study in enumerate(_checked_boxes(true_boxes, c, "true_boxes", scored=False)):
        if not study:
            continue
        cls = [label for label, _ in study]
        ious.extend(_iou_pairs(np.stack([box for _, box in study]), pred[i, cls]).tolist())
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


# --------------------------------------------------------------------------- detection
FROC_FP_RATES = (0.5, 1.0, 2.0)
COCO_MAX_DETECTIONS = 100


def _xywh(box: np.ndarray) -> list[float]:
    """xyxy -> COCO's (x, y, width, height); a negative width or height becomes 0."""
    return [float(box[0]), float(box[1]), float(max(box[2] - box[0], 0.0)), float(max(box[3] - box[1], 0.0))]


def _coco_eval(truth: list, dets: list, categories: list[int]) -> Any:
    """pycocotools ``COCOeval`` (bbox) run and accumulated over all studies; its printing silenced."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = [
        {"id": k + 1, "image_id": i, "category_id": label, "bbox": _xywh(box), "iscrowd": 0,
         "area": _xywh(box)[2] * _xywh(box)[3]}
        for k, (i, label, box) in enumerate((i, label, box) for i, study in enumerate(truth) for label, box in study)
    ]  # fmt: skip
    results = [
        {"image_id": i, "category_id": label, "bbox": _xywh(box), "score": score}
        for i, study in enumerate(dets) for label, box, score in study if label in categories
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i} for i in range(len(truth))],
            "categories": [{"id": label} for label in categories],
            "annotations": annotations,
        }
        gt.createIndex()
        dt = gt.loadRes(results) if results else None
        if dt is None:
            return None
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.params.imgIds = list(range(len(truth)))
        coco_eval.params.catIds = categories
        coco_eval.params.maxDets = [1, 10, COCO_MAX_DETECTIONS]
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _average_precision(precision: np.ndarray) -> float:
    """COCO's mean over the defined (> -1) entries of a precision slice; 0.0 if none is defined."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0


def froc_sensitivities(
    tp_scores: Sequence[float],
    fp_scores: Sequence[float],
    num_targets: int,
    num_images: int,
    fp_rates: Sequence[float],
) -> dict[str, float]:
    """FROC read at ``fp_rates``: for each rate, the highest sensitivity (true positives / ``num_targets``)
    among the score thresholds whose false positives per image (``/ num_images``) stay at or below it.

    Written out rather than MONAI's ``compute_froc_curve_data``, which skips the lowest score
    threshold (all detections scored alike -> sensitivity 0).
    """
    tp, fp = np.sort(np.asarray(tp_scores, float)), np.sort(np.asarray(fp_scores, float))
    thresholds = np.unique(np.concatenate([tp, fp]))
    found = len(tp) - np.searchsorted(tp, thresholds, side="left")  # detections scored >= threshold
    false = len(fp) - np.searchsorted(fp, thresholds, side="left")
    sensitivity = np.concatenate([[0.0], found / max(num_targets, 1)])
    fp_per_image = np.concatenate([[0.0], false / max(num_images, 1)])
    return {f"{rate:g}": float(sensitivity[fp_per_image <= rate].max()) for rate in fp_rates}


def _froc(coco_eval: Any, num_images: int, fp_rates: Sequence[float]) -> dict[str, float]:
    """:func:`froc_sensitivities` of the detections as COCOeval matched them at IoU 0.5 (greedy by
    score, per finding and image), pooled over findings."""
    tp, fp, targets = [], [], 0
    all_area = coco_eval.params.areaRng[0]
    for entry in coco_eval.evalImgs:
        if entry is None or entry["aRng"] != all_area:
            continue
        targets += int((np.asarray(entry["gtIgnore"]) == 0).sum())
        matched = np.asarray(entry["dtMatches"])[0] > 0  # IoU threshold 0.5 is the first
        ignored = np.asarray(entry["dtIgnore"])[0].astype(bool)
        scores = np.asarray(entry["dtScores"])
        tp.extend(scores[matched & ~ignored].tolist())
        fp.extend(scores[~matched & ~ignored].tolist())
    return froc_sensitivities(tp, fp, targets, num_images, fp_rates)


def detection_metrics(
    detections: Sequence[Sequence[tuple[int, Sequence[float], float]]],
    true_boxes: Sequence[Sequence[tuple[int, Sequence[float]]]],
    label_names: Sequence[str],
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> dict[str, Any]:
    """COCO mAP and FROC of scored detections against every true box, over the findings that have boxes.

    Args:
        detections: ``N`` lists (one per image) of ``(class_index, (x0, y0, x1, y1), score)``,
            any number per finding (at most 100 per image count, COCO's ``maxDets``).
        true_boxes: ``N`` lists of ``(class_index, (x0, y0, x1, y1))``, same coordinates.
        label_names: the ``C`` finding names.
        fp_rates: false positives per image at which FROC sensitivity is read.

    Only findings with at least one true box are scored ("boxed findings"); detections of
    other findings are left out. AP comes from pycocotools' ``COCOeval`` (bbox, 101-point
    interpolated precision, area range "all", 100 detections per image): ``map_50`` at IoU 0.5,
    ``map_50_95`` averaged over IoU 0.50:0.05:0.95, both the mean over the scored findings.
    FROC: sensitivity (share of true boxes matched at IoU >= 0.5) at each ``fp_rates`` number of
    false positives per image, pooled over findings (:func:`froc_sensitivities`).

    Returns:
        ``{"map_50", "map_50_95", "froc": {"0.5": ..., "1": ..., "2": ...}, "froc_mean",
        "n_images", "n_boxes", "per_label": {name: {"ap_50", "ap_50_95", "n_boxes"}}}``;
        ``map_*`` / ``froc*`` are ``None`` when no study has a true box.
    """
    names = list(label_names)
    if len(detections) != len(true_boxes):
        raise ValueError(f"detections has {len(detections)} studies, true_boxes {len(true_boxes)}")
    truth = _checked_boxes(true_boxes, len(names), "true_boxes", scored=False)
    dets = _checked_boxes(detections, len(names), "detections", scored=True)
    counts = np.bincount([label for study in truth for label, _ in study], minlength=len(names))
    categories = [c for c in range(len(names)) if counts[c] > 0]
    result: dict[str, Any] = {"n_images": len(truth), "n_boxes": int(counts.sum())}
    if not categories:
        return {**result, "map_50": None, "map_50_95": None, "froc": None, "froc_mean": None, "per_label": {}}
    coco_eval = _coco_eval(truth, dets, categories)
    if coco_eval is None:  # no detection of a scored finding at all
        precision = np.zeros((10, 101, len(categories), 1, 1))
        froc = {f"{rate:g}": 0.0 for rate in fp_rates}
    else:
        precision = coco_eval.eval["precision"][:, :, :, 0:1, -1:]  # area "all", 100 detections
        froc = _froc(coco_eval, len(truth), fp_rates)
    per_label = {
        names[c]: {
            "ap_50": _average_precision(precision[0, :, k]),
            "ap_50_95": _average_precision(precision[:, :, k]),
            "n_boxes": int(counts[c]),
        }
        for k, c in enumerate(categories)
    }
    return {
        **result,
        "map_50": _average_precision(precision[0]),
        "map_50_95": _average_precision(precision),
        "froc": froc,
        "froc_mean": float(np.mean(list(froc.values()))),
        "per_label": per_label,
    }


@dataclass
class ImageMatches:
    """COCOeval's IoU-0.5 matching of one finding's detections in one image (area "all", 100 detections).

    scores: [D] detection scores; true_positive: [D] bool (matched a true box); n_true: true boxes.
    """

    scores: np.ndarray
    true_positive: np.ndarray
    n_true: int


def matches_at_50(
    detections: Sequence[Sequence[tuple[int, Sequence[float], float]]],
    true_boxes: Sequence[Sequence[tuple[int, Sequence[float]]]],
    num_labels: int,
) -> dict[int, list[ImageMatches]]:
    """Per boxed finding, the :class:`ImageMatches` of every image (same inputs as :func:`detection_metrics`).

    Matching is per image, so a bootstrap over images reuses it: :func:`map_50_of_images` gives the
    mAP@0.5 of any resample (with repeats) without re-running COCOeval.
    """
    truth = _checked_boxes(true_boxes, num_labels, "true_boxes", scored=False)
    dets = _checked_boxes(detections, num_labels, "detections", scored=True)
    counts = np.bincount([label for study in truth for label, _ in study], minlength=num_labels)
    categories = [c for c in range(num_labels) if counts[c] > 0]
    empty = ImageMatches(np.zeros(0), np.zeros(0, dtype=bool), 0)
    out = {c: [empty] * len(truth) for c in categories}
    coco_eval = _coco_eval(truth, dets, categories) if categories else None
    if coco_eval is None:
        for c in categories:
            out[c] = [
                ImageMatches(np.zeros(0), np.zeros(0, dtype=bool), sum(k == c for k, _ in s)) for s in truth
            ]
        return out
    all_area = coco_eval.params.areaRng[0]
    for entry in coco_eval.evalImgs:
        if entry is None or entry["aRng"] != all_area:
            continue
        kept = ~np.asarray(entry["dtIgnore"])[0].astype(bool)
        out[entry["category_id"]][entry["image_id"]] = ImageMatches(
            scores=np.asarray(entry["dtScores"], dtype=float)[kept],
            true_positive=(np.asarray(entry["dtMatches"])[0] > 0)[kept],
            n_true=int((np.asarray(entry["gtIgnore"]) == 0).sum()),
        )
    return out


def _interpolated_ap(scores: np.ndarray, true_positive: np.ndarray, n_true: int) -> float | None:
    """COCO's 101-point interpolated AP of pooled detections (None without a true box)."""
    if n_true == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(true_positive[order])
    fp = np.cumsum(~true_positive[order])
    recall = tp / n_true
    precision = tp / np.maximum(tp + fp, np.spacing(1))
    envelope = np.append(np.maximum.accumulate(precision[::-1])[::-1], 0.0)  # 0 beyond the last recall
    at = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")  # COCO's recall thresholds
    return float(envelope[at].mean())


def map_50_of_images(matches: dict[int, list[ImageMatches]], images: Sequence[int]) -> float | None:
    """mAP@0.5 (COCO, mean over findings with a true box among ``images``) of the images ``images``
    (indices into the lists of :func:`matches_at_50`; repeats count twice, as in a bootstrap resample)."""
    aps = []
    for per_image in matches.values():
        chosen = [per_image[i] for i in images]
        ap = _interpolated_ap(
            np.concatenate([m.scores for m in chosen]) if chosen else np.zeros(0),
            np.concatenate([m.true_positive for m in chosen]) if chosen else np.zeros(0, dtype=bool),
            sum(m.n_true for m in chosen),
        )
        if ap is not None:
            aps.append(ap)
    return float(np.mean(aps)) if aps else None
