"""Localization of a trained run against the mean-box baseline, on one split of its data.

The mean-box baseline predicts, for every study, the mean training box of each finding (normalised
xyxy); each of its boxes is scored with the run's own probability of that finding, so both rows
share the classifier and differ only in where the boxes are. Both go through the same metrics
(``medmodal.evaluation.scoring.localization_scores``: IoU / hit@0.5 of the top box per finding,
COCO mAP via pycocotools, FROC).

``--head KEY=VALUE`` changes a decoding setting of the trained head for this scoring only (``score``,
``nms_iou``, ``min_score``, ``max_detections``; model.localization in the config), e.g. ``--head
score=heatmap_x_probability``. ``--bootstrap N`` adds 95 % percentile intervals of hit@0.5 and mAP@0.5
for both rows and for their difference, from N resamples of the studies (paired: the same resampled
studies score both).

    python benchmarks/localization_vs_mean_box.py RUN --split val [--data DATA] [--head KEY=VALUE ...] [--bootstrap N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from medmodal.data.pipeline import true_boxes_normalised
from medmodal.evaluation.evaluate import predict_split
from medmodal.evaluation.metrics.localization import localization_metrics, map_50_of_images, matches_at_50
from medmodal.evaluation.scoring import SplitPredictions, localization_scores, study_detections

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localization_diagnosis import run_split_parser, trained_and_data


def mean_training_boxes(studies, labels: list[str]) -> np.ndarray:
    """[C, 4] mean normalised box of each finding over ``studies`` (zeros for a finding without boxes)."""
    truth = true_boxes_normalised(studies, labels)
    out = np.zeros((len(labels), 4))
    for c in range(len(labels)):
        boxes = [box for study in truth for k, box in study if k == c]
        if boxes:
            out[c] = np.mean(boxes, axis=0)
    return out


# Decoding settings of a trained head that may change at scoring time (no retraining), with their types.
DECODING = {"score": str, "nms_iou": float, "min_score": float, "max_detections": int}


def set_decoding(head, settings: list[str]) -> dict:
    """Apply ``KEY=VALUE`` decoding settings to a trained localization head; returns them parsed."""
    from medmodal.config import LocalizationConfig

    parsed = {}
    for item in settings:
        key, _, value = item.partition("=")
        if key not in DECODING:
            raise SystemExit(f"--head {item!r}: a decoding setting is one of {sorted(DECODING)}")
        parsed[key] = DECODING[key](value)
    LocalizationConfig(**parsed)  # validated like the config (names the bad field)
    for key, value in parsed.items():
        setattr(head, key, value)
    return parsed


def _hit_and_map(
    preds: SplitPredictions, truth: list, matches: dict, labels: list[str], idx: np.ndarray
) -> tuple:
    """hit@0.5 and mAP@0.5 of the studies ``idx`` (indices may repeat: a bootstrap resample); ``matches``:
    COCOeval's per-image matching of ``preds`` (``matches_at_50``), reused by every resample."""
    hit = localization_metrics(preds.boxes[idx], [truth[i] for i in idx], labels)["hit_at_0_5"]
    return hit, map_50_of_images(matches, idx)


def paired_intervals(model: SplitPredictions, baseline: SplitPredictions, labels: list[str], n: int) -> dict:
    """95 % percentile intervals of hit@0.5 / mAP@0.5 of both predictors and of model - baseline over
    ``n`` resamples of the imaged studies (seed 0)."""
    truth = true_boxes_normalised(model.studies, labels)
    imaged = np.array([i for i, s in enumerate(model.studies) if s.image is not None])
    rng = np.random.default_rng(0)
    found = {
        name: matches_at_50(study_detections(p), truth, len(labels))
        for name, p in (("m", model), ("b", baseline))
    }
    draws = np.array([
        [*_hit_and_map(model, truth, found["m"], labels, idx), *_hit_and_map(baseline, truth, found["b"], labels, idx)]
        for idx in (rng.choice(imaged, size=len(imaged), replace=True) for _ in range(n))
    ])  # fmt: skip
    columns = {"model_hit_at_0_5": draws[:, 0], "model_map_50": draws[:, 1], "baseline_hit_at_0_5": draws[:, 2],
               "baseline_map_50": draws[:, 3], "difference_hit_at_0_5": draws[:, 0] - draws[:, 2],
               "difference_map_50": draws[:, 1] - draws[:, 3]}  # fmt: skip
    intervals = {name: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
                 for name, v in columns.items()}  # fmt: skip
    # the reused matching gives the full split's mAP@0.5 exactly (pycocotools' figure above)
    return intervals | {"n_resamples": n, "model_map_50_all_studies": map_50_of_images(found["m"], imaged)}


def summary(metrics: dict) -> dict:
    detection = metrics["detection"]
    row = {"iou_mean": metrics["iou_mean"], "hit_at_0_5": metrics["hit_at_0_5"],
           "map_50": detection["map_50"], "map_50_95": detection["map_50_95"]}  # fmt: skip
    row.update({f"froc_at_{k}": v for k, v in (detection["froc"] or {}).items()})
    row["per_label_ap_50"] = {name: v["ap_50"] for name, v in detection["per_label"].items()}
    row["per_label_hit_at_0_5"] = {name: v["hit_at_0_5"] for name, v in metrics["per_label"].items()}
    return row


def main() -> None:
    parser = run_split_parser(__doc__.splitlines()[0])
    parser.add_argument("--head", action="append", default=[], metavar="KEY=VALUE", help="decoding setting")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="paired study resamples")
    args = parser.parse_args()
    trained, manifest = trained_and_data(args)
    decoding = set_decoding(trained.model.localizer, args.head)
    studies = manifest.split(args.split)
    preds = predict_split(
        trained, studies, beam_size=1, max_tokens=4, batch_size=64, generate=False, progress=False
    )
    baseline = SplitPredictions(
        studies=studies, probs=preds.probs, targets=preds.targets, image_logits_probs=None, text_logits_probs=None,
        boxes=np.tile(mean_training_boxes(manifest.split("train"), trained.labels), (len(studies), 1, 1)),
        generated=None, references=preds.references,
    )  # fmt: skip
    result = {
        "run": str(trained.run.root), "split": args.split, "n_studies": len(studies), "decoding": decoding,
        "model": summary(localization_scores(preds, trained.labels)),
        "mean_box_baseline": summary(localization_scores(baseline, trained.labels)),
    }  # fmt: skip
    if args.bootstrap:
        result["intervals_95"] = paired_intervals(preds, baseline, trained.labels, args.bootstrap)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
