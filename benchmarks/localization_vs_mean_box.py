"""Localization of a trained run against the mean-box baseline, on one split of its data.

The mean-box baseline predicts, for every study, the mean training box of each finding (normalised
xyxy); each of its boxes is scored with the run's own probability of that finding, so both rows
share the classifier and differ only in where the boxes are. Both go through the same metrics
(``medmodal.evaluation.evaluate.localization_scores``: IoU / hit@0.5 of the top box per finding,
COCO mAP via pycocotools, FROC).

    python benchmarks/localization_vs_mean_box.py RUN --split val [--data DATA]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from medmodal.data.pipeline import read_dataset
from medmodal.evaluation.evaluate import (
    SplitPredictions,
    localization_scores,
    predict_split,
    true_boxes_normalised,
)
from medmodal.training.loading import load_trained


def mean_training_boxes(studies, labels: list[str]) -> np.ndarray:
    """[C, 4] mean normalised box of each finding over ``studies`` (zeros for a finding without boxes)."""
    truth = true_boxes_normalised(studies, labels)
    out = np.zeros((len(labels), 4))
    for c in range(len(labels)):
        boxes = [box for study in truth for k, box in study if k == c]
        if boxes:
            out[c] = np.mean(boxes, axis=0)
    return out


def summary(metrics: dict) -> dict:
    detection = metrics["detection"]
    row = {"iou_mean": metrics["iou_mean"], "hit_at_0_5": metrics["hit_at_0_5"],
           "map_50": detection["map_50"], "map_50_95": detection["map_50_95"]}  # fmt: skip
    row.update({f"froc_at_{k}": v for k, v in (detection["froc"] or {}).items()})
    row["per_label_ap_50"] = {name: v["ap_50"] for name, v in detection["per_label"].items()}
    row["per_label_hit_at_0_5"] = {name: v["hit_at_0_5"] for name, v in metrics["per_label"].items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--split", default="val")
    parser.add_argument("--data", default=None, help="default: the data the run was trained on")
    args = parser.parse_args()
    trained = load_trained(args.run)
    data = args.data or json.loads(trained.run.data_summary.read_text())["data"]
    manifest = read_dataset(data, trained.config, labels=trained.labels)
    studies = manifest.split(args.split)
    preds = predict_split(trained, studies, beam_size=1, max_tokens=4, batch_size=64, generate=False, progress=False)
    baseline = SplitPredictions(
        studies=studies, probs=preds.probs, targets=preds.targets, image_logits_probs=None, text_logits_probs=None,
        boxes=np.tile(mean_training_boxes(manifest.split("train"), trained.labels), (len(studies), 1, 1)),
        generated=None, references=preds.references,
    )  # fmt: skip
    result = {
        "run": str(trained.run.root), "split": args.split, "n_studies": len(studies),
        "model": summary(localization_scores(preds, trained.labels)),
        "mean_box_baseline": summary(localization_scores(baseline, trained.labels)),
    }  # fmt: skip
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
