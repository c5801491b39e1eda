"""Where the localization misses come from, on one split of a trained run (choose settings on ``val``).

For every true box, the top box of its finding in the same study (the box at the finding's highest
heatmap cell, what hit@0.5 scores) is put in one of three groups:

- ``hit``: IoU >= 0.5;
- ``centre_wrong``: the predicted centre lies outside the true box (the peak is in the wrong place);
- ``size_wrong``: the centre lies inside the true box but IoU < 0.5 (right place, wrong extent).

``true_cell_hit`` is the hit rate of the box the head regresses at the true centre's cell (its size
and offset there, whatever the heatmap says): the ceiling of hit@0.5 with a perfect peak.
For mAP@0.5 (COCO, pycocotools) three scorings of the same detections are compared: the head's
own (``heatmap``), the heatmap peak times the classifier's probability (``heatmap_x_probability``),
and an oracle that ranks every detection of a study that has the finding above every detection of
a study that does not (``oracle_study_ranking``): the gap between the first and the last is what
ranking across studies costs, the rest is localization within studies. ``--sweep`` also scores
decoding settings (score, NMS IoU, minimum score) without retraining.

    python benchmarks/localization_diagnosis.py RUN --split val [--sweep] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from medmodal.data.dataset import make_dataloader
from medmodal.data.manifest import Manifest
from medmodal.data.pipeline import build_dataset, true_boxes_normalised
from medmodal.evaluation.metrics.localization import detection_metrics
from medmodal.evaluation.scoring import detections_as_lists
from medmodal.models.localization import decode_boxes
from medmodal.models.types import LocalizationOutput
from medmodal.training.loading import TrainedRun, load_trained

GROUPS = ("hit", "centre_wrong", "size_wrong")


@dataclass
class DenseOutputs:
    """The head's maps over a split (N studies) and the classifier's probabilities [N, C]."""

    maps: LocalizationOutput
    probs: torch.Tensor


@torch.no_grad()
def dense_outputs(trained, studies, batch_size: int = 64) -> DenseOutputs:
    """Run the model over ``studies`` (evaluation mode) and keep the localization maps (ungated)."""
    cfg = trained.config
    dataset = build_dataset(studies, trained.tokenizer, trained.labels, cfg, train=False)
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, seed=0)
    parts, probs = [], []
    model = trained.model.eval()
    for batch in loader:
        out = model({k: v for k, v in batch.items() if k != "target_ids"})
        parts.append(out.localization)
        probs.append(torch.sigmoid(out.logits))
    cat = {
        name: torch.cat([getattr(p, name) for p in parts])
        for name in ("boxes", "scores", "heatmaps", "log_sizes", "offsets")
    }
    return DenseOutputs(maps=LocalizationOutput(**cat), probs=torch.cat(probs))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two normalised xyxy boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def miss_groups(dense: DenseOutputs, truth: list, labels: list[str]) -> dict:
    """Per finding and pooled: share of true boxes in each of :data:`GROUPS`, ``true_cell_hit``, and the
    median centre error of the top box in cells of the head's map."""
    maps = dense.maps
    _, _, h, w = maps.heatmaps.shape
    cell_boxes = decode_boxes(maps.offsets, maps.log_sizes).numpy()  # [N, h, w, 4]
    top = maps.boxes.numpy()
    rows = {name: [] for name in labels}
    for i, study in enumerate(truth):
        for c, box in study:
            box = np.asarray(box)
            pred = top[i, c]
            iou = _iou(box, pred)
            cx, cy = (pred[0] + pred[2]) / 2, (pred[1] + pred[3]) / 2
            inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
            group = "hit" if iou >= 0.5 else ("size_wrong" if inside else "centre_wrong")
            tx, ty = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            col, row = min(int(tx * w), w - 1), min(int(ty * h), h - 1)
            error = float(np.hypot((cx - tx) * w, (cy - ty) * h))
            rows[labels[c]].append((group, _iou(box, cell_boxes[i, row, col]) >= 0.5, error))

    def summary(entries: list) -> dict:
        if not entries:
            return {"n_boxes": 0}
        groups = [g for g, _, _ in entries]
        out = {"n_boxes": len(entries)}
        out.update({g: round(groups.count(g) / len(entries), 3) for g in GROUPS})
        out["true_cell_hit"] = round(float(np.mean([t for _, t, _ in entries])), 3)
        out["median_centre_error_cells"] = round(float(np.median([e for _, _, e in entries])), 2)
        return out

    result = {name: summary(entries) for name, entries in rows.items() if entries}
    result["all"] = summary([e for entries in rows.values() for e in entries])
    return result


def scored_detections(head, dense: DenseOutputs, *, score: str, nms_iou: float, min_score: float) -> list:
    """Detections of every study with these decoding settings (the head's own otherwise)."""
    gate = dense.probs if score == "heatmap_x_probability" else None
    saved = (head.nms_iou, head.min_score)
    head.nms_iou, head.min_score = nms_iou, min_score
    try:
        found = head.detect(replace(dense.maps, score_gate=gate))
    finally:
        head.nms_iou, head.min_score = saved
    return detections_as_lists(found)


def oracle_study_ranking(detections: list, truth: list) -> list:
    """Each detection's score + 1 where its study has a true box of its finding (perfect study ranking)."""
    return [
        [(c, box, s + (1.0 if c in {k for k, _ in study} else 0.0)) for c, box, s in dets]
        for dets, study in zip(detections, truth)
    ]


def ap_summary(metrics: dict) -> dict:
    row = {"map_50": round(metrics["map_50"], 3), "map_50_95": round(metrics["map_50_95"], 3)}
    row.update({name: round(v["ap_50"], 3) for name, v in metrics["per_label"].items()})
    return row


def run_split_parser(description: str) -> argparse.ArgumentParser:
    """A command line ``RUN [--split SPLIT] [--data DATA]``: a trained run and one split of a dataset."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run")
    parser.add_argument("--split", default="val")
    parser.add_argument("--data", default=None, help="default: the data the run was trained on")
    return parser


def trained_and_data(args: argparse.Namespace) -> tuple[TrainedRun, Manifest]:
    """The run of :func:`run_split_parser`'s arguments and its ``--data``, read as the run reads it."""
    trained = load_trained(args.run)
    return trained, trained.read_data(args.data or trained.run.training_data())


def main() -> None:
    parser = run_split_parser(__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also score decoding settings")
    parser.add_argument("--out", default=None, help="write the result as JSON here too")
    args = parser.parse_args()
    trained, manifest = trained_and_data(args)
    studies = manifest.split(args.split)
    studies = [s for s in studies if s.image is not None]
    truth = true_boxes_normalised(studies, trained.labels)
    dense = dense_outputs(trained, studies)
    head = trained.model.localizer
    own = {"nms_iou": head.nms_iou, "min_score": head.min_score}
    plain = scored_detections(head, dense, score="heatmap", **own)
    result = {
        "run": str(args.run), "split": args.split, "n_studies": len(studies),
        "misses": miss_groups(dense, truth, trained.labels),
        "ap": {
            "heatmap": ap_summary(detection_metrics(plain, truth, trained.labels)),
            "heatmap_x_probability": ap_summary(detection_metrics(
                scored_detections(head, dense, score="heatmap_x_probability", **own), truth, trained.labels)),
            "oracle_study_ranking": ap_summary(detection_metrics(oracle_study_ranking(plain, truth), truth, trained.labels)),
        },
    }  # fmt: skip
    if args.sweep:
        result["sweep"] = [
            {"score": score, "nms_iou": nms, "min_score": low,
             **ap_summary(detection_metrics(scored_detections(head, dense, score=score, nms_iou=nms, min_score=low),
                                            truth, trained.labels))}
            for score, nms, low in itertools.product(("heatmap", "heatmap_x_probability"), (0.3, 0.5, 0.7), (0.001, 0.01, 0.05))
        ]  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
