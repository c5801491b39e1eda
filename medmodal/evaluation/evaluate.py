"""``medmodal evaluate``: run a trained model over a split and score every task.

Writes ``metrics.json`` (test split; other splits go to ``metrics_<split>.json``)
and ``predictions/<split>.jsonl`` (one line per study, the raw material for
bootstrap confidence intervals and error analysis) into the run folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medmodal.data.dataset import make_dataloader
from medmodal.data.pipeline import build_dataset, true_boxes_normalised
from medmodal.data.types import Study
from medmodal.evaluation.metrics import (
    classification_metrics,
    clinical_efficacy,
    expected_calibration_error,
    generation_metrics,
    localization_metrics,
    tokenize,
)
from medmodal.evaluation.metrics.localization import detection_metrics
from medmodal.labeling import default_labeler
from medmodal.models.types import Detections
from medmodal.runs import write_json_atomic
from medmodal.training.baselines import is_baseline_run
from medmodal.training.loading import TrainedRun, load_trained

log = logging.getLogger(__name__)


@dataclass
class SplitPredictions:
    """Model outputs over one split, aligned with ``studies``.

    probs: [N, C]; targets: [N, C]; boxes: [N, C, 4] normalised xyxy, the top box per finding
    (None without a localization head); generated / references: N strings (None without a decoder);
    detections: per study a list of (class index, normalised xyxy, score), several per finding
    (None: scored from ``boxes``, each finding's box with its probability; see
    :func:`study_detections`).
    """

    studies: list[Study]
    probs: np.ndarray
    targets: np.ndarray
    image_logits_probs: np.ndarray | None
    text_logits_probs: np.ndarray | None
    boxes: np.ndarray | None
    generated: list[str] | None
    references: list[str]
    detections: list[list[tuple[int, list[float], float]]] | None = None


def _without_targets(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "target_ids"}


@torch.no_grad()
def predict_split(
    trained: TrainedRun,
    studies: list[Study],
    *,
    beam_size: int,
    max_tokens: int,
    batch_size: int,
    generate: bool = True,
    drop: str | None = None,
    progress: bool = True,
    hide: dict[str, np.ndarray] | None = None,
) -> SplitPredictions:
    """Run the model over ``studies``.

    drop: ``"image"`` or ``"text"`` hides that modality for every study (missing-modality
    evaluation); None keeps both.
    hide: per-study masks ``{"image": bool [N], "text": bool [N]}`` (aligned with ``studies``);
    True hides that modality of that study (random partial removal). None hides nothing.
    """
    hide = _check_hide_masks(hide, len(studies))
    cfg = trained.config
    dataset = build_dataset(studies, trained.tokenizer, trained.labels, cfg, train=False)
    loader = make_dataloader(dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.data.num_workers, seed=0)
    model = trained.model
    device = next(model.parameters()).device
    can_generate = generate and cfg.model.heads.generation
    probs, targets, img_p, txt_p, boxes, generated, detections = [], [], [], [], [], [], []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if drop is not None:
            batch[f"has_{drop}"] = torch.zeros_like(batch[f"has_{drop}"])
        start = sum(len(p) for p in probs)  # the loader keeps the order of ``studies``
        for modality, mask in hide.items():
            hidden = torch.as_tensor(mask[start : start + len(batch["id"])], device=device)
            batch[f"has_{modality}"] = batch[f"has_{modality}"] & ~hidden
        out = model(_without_targets(batch))
        probs.append(torch.sigmoid(out.logits).cpu())
        targets.append(batch["labels"].cpu())
        if out.image_logits is not None:
            img_p.append(torch.sigmoid(out.image_logits).cpu())
        if out.text_logits is not None:
            txt_p.append(torch.sigmoid(out.text_logits).cpu())
        if out.boxes is not None:
            boxes.append(out.boxes.cpu())
        if out.localization is not None:  # several scored boxes per finding (peaks + NMS)
            detections.extend(detections_as_lists(model.localizer.detect(out.localization)))
        if can_generate:
            gen = model.generate(_without_targets(batch), max_len=max_tokens, beam_size=beam_size)
            generated.extend(trained.tokenizer.decode(ids) for ids in gen.ids.cpu().tolist())
    target_fields = cfg.data.target_fields
    return SplitPredictions(
        studies=studies,
        probs=torch.cat(probs).numpy(),
        targets=torch.cat(targets).numpy(),
        image_logits_probs=torch.cat(img_p).numpy() if img_p else None,
        text_logits_probs=torch.cat(txt_p).numpy() if txt_p else None,
        boxes=torch.cat(boxes).numpy() if boxes else None,
        generated=generated if can_generate else None,
        detections=detections if boxes else None,
        # Sections joined by a blank line: the labeler ends a sentence there, so a
        # negation in the findings never leaks into the impression.
        references=[s.text(target_fields, sep="\n\n") for s in studies],
    )


def _check_hide_masks(hide: dict[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    """``hide`` validated: keys ``image`` / ``text``, bool arrays of length ``n``."""
    checked = {}
    for modality, mask in (hide or {}).items():
        if modality not in ("image", "text"):
            raise ValueError(f"hide: unknown modality {modality!r}; use 'image' or 'text'")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"hide[{modality!r}]: one value per study ({n}), got shape {mask.shape}")
        checked[modality] = mask
    return checked


def detections_as_lists(detections: Detections) -> list[list[tuple[int, list[float], float]]]:
    """Batched :class:`Detections` -> per study the list of (class index, xyxy, score), padding dropped."""
    labels, boxes, scores = (t.cpu().tolist() for t in (detections.labels, detections.boxes, detections.scores))
    return [
        [(c, box, score) for c, box, score in zip(row_labels, row_boxes, row_scores) if c >= 0]
        for row_labels, row_boxes, row_scores in zip(labels, boxes, scores)
    ]


def study_detections(preds: SplitPredictions) -> list[list[tuple[int, list[float], float]]]:
    """The scored boxes of each study: the model's detections, or (a predictor with one box per
    finding and no scores of its own, e.g. the mean-box baseline) each finding's box scored by the
    finding's probability."""
    if preds.detections is not None:
        return preds.detections
    return [
        [(c, preds.boxes[i, c].tolist(), float(preds.probs[i, c])) for c in range(preds.boxes.shape[1])]
        for i in range(len(preds.studies))
    ]


def localization_scores(preds: SplitPredictions, labels: list[str]) -> dict[str, Any]:
    """IoU / hit@0.5 of the top box per finding, and COCO mAP + FROC of the scored detections,
    over the studies that have an image (a box needs one)."""
    truth = true_boxes_normalised(preds.studies, labels)
    imaged = [i for i, s in enumerate(preds.studies) if s.image is not None]
    metrics = localization_metrics(preds.boxes, truth, labels)
    detections = study_detections(preds)
    metrics["detection"] = detection_metrics([detections[i] for i in imaged], [truth[i] for i in imaged], labels)
    for key in ("map_50", "map_50_95", "froc_mean"):
        metrics[key] = metrics["detection"][key]
    return metrics


def score_predictions(
    preds: SplitPredictions, trained: TrainedRun, *, threshold: float | list[float], uncertain_as: str
) -> dict[str, Any]:
    """All metrics of one split as a nested dict (``classification``, ``localization``, ``generation``)."""
    labels = trained.labels
    metrics: dict[str, Any] = {
        "n_studies": len(preds.studies),
        "classification": classification_metrics(preds.probs, preds.targets, labels, threshold=threshold),
    }
    # Pooled-label expected calibration error (15 bins); ``calibrated``: RUN/calibration.json applied.
    metrics["classification"]["ece"] = expected_calibration_error(preds.probs, preds.targets)
    metrics["classification"]["calibrated"] = bool(getattr(trained, "calibrated", False))
    for name, unimodal in (("image_head", preds.image_logits_probs), ("text_head", preds.text_logits_probs)):
        if unimodal is not None:
            metrics["classification"][f"{name}_auroc_macro"] = classification_metrics(
                unimodal, preds.targets, labels, threshold=threshold
            )["auroc_macro"]
    if preds.boxes is not None:
        metrics["localization"] = localization_scores(preds, labels)
    if preds.generated is not None:
        generation = generation_scores(preds, uncertain_as)
        if generation is not None:
            metrics["generation"] = generation
    return metrics


def generation_scores(preds: SplitPredictions, uncertain_as: str) -> dict[str, Any] | None:
    """Text and clinical-efficacy metrics over the studies that have a reference report; None
    (logged) when none has one, so a model trained with a decoder still evaluates on such data."""
    keep = [i for i, ref in enumerate(preds.references) if tokenize(ref)]
    if not keep:
        log.warning("generation not scored: no study of this split has reference text in its target fields")
        return None
    references = [preds.references[i] for i in keep]
    generated = [preds.generated[i] for i in keep]
    generation = generation_metrics(references, generated)
    efficacy = clinical_efficacy(references, generated, default_labeler(), findings=None, uncertain_as=uncertain_as)
    generation.update({k: v for k, v in efficacy.items() if k != "per_label"})
    generation["ce_per_label"] = efficacy.get("per_label", {})
    generation["n_without_reference"] = len(preds.references) - len(keep)
    return generation


def write_predictions(preds: SplitPredictions, labels: list[str], path: Path) -> None:
    """One JSON line per study: id, site, true labels, probabilities, boxes, generated and reference text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as fh:
        for i, study in enumerate(preds.studies):
            row: dict[str, Any] = {
                "id": study.id,
                "site": study.site,
                "patient_id": study.patient_id,
                "labels": study.labels,
                "probs": dict(zip(labels, np.round(preds.probs[i], 6).tolist())),
            }
            if preds.boxes is not None:
                row["boxes"] = dict(zip(labels, np.round(preds.boxes[i], 5).tolist()))
            if preds.detections is not None:
                row["detections"] = [
                    {"label": labels[c], "box": np.round(box, 5).tolist(), "score": round(score, 5)}
                    for c, box, score in preds.detections[i]
                ]
            if preds.generated is not None:
                row["generated"] = preds.generated[i]
            row["reference"] = preds.references[i]
            fh.write(json.dumps(row) + "\n")
    tmp.replace(path)


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    split: str = "test",
    beam_size: int | None = None,
    max_tokens: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the run on ``split`` of ``data`` (default: the data it was trained on); write and return metrics."""
    if is_baseline_run(run_dir):  # a scikit-learn baseline: same metrics and predictions format
        from medmodal.evaluation.evaluate_baseline import evaluate_baseline_run

        return evaluate_baseline_run(run_dir, data, split=split)
    trained = load_trained(run_dir)
    cfg = trained.config
    if data is None:
        data = trained.run.training_data()
    studies = trained.studies(data, split)
    preds = predict_split(
        trained,
        studies,
        beam_size=beam_size or cfg.evaluate.beam_size,
        max_tokens=max_tokens or cfg.evaluate.max_generate_tokens,
        batch_size=batch_size or cfg.evaluate.batch_size,
        progress=progress,
    )
    metrics = score_predictions(preds, trained, threshold=trained.decision_thresholds(), uncertain_as=cfg.evaluate.uncertain_as)
    metrics = {"run": str(trained.run.root), "data": str(Path(data).resolve()), "split": split, **metrics}
    out = trained.run.metrics if split == "test" else trained.run.root / f"metrics_{split}.json"
    write_json_atomic(out, metrics)
    write_predictions(preds, trained.labels, trained.run.predictions(split))
    return metrics


HEADLINE = (
    ("classification", "auroc_macro"),
    ("classification", "f1_macro"),
    ("classification", "accuracy"),
    ("classification", "ece"),
    ("localization", "iou_mean"),
    ("localization", "hit_at_0_5"),
    ("localization", "map_50"),
    ("localization", "map_50_95"),
    ("localization", "froc_mean"),
    ("generation", "bleu_4"),
    ("generation", "rouge_l"),
    ("generation", "cider"),
    ("generation", "ce_f1"),
)


def format_metrics_table(metrics: dict[str, Any]) -> str:
    """A small text table of the headline metrics and per-label AUROC."""
    calibrated = " (calibrated probabilities)" if metrics.get("classification", {}).get("calibrated") else ""
    lines = [f"split: {metrics.get('split')}   studies: {metrics.get('n_studies')}{calibrated}"]
    for section, key in HEADLINE:
        value = metrics.get(section, {}).get(key)
        if value is not None:
            lines.append(f"  {section + '.' + key:<32} {value:.4f}")
    per_label = metrics.get("classification", {}).get("per_label", {})
    if per_label:
        lines.append("  per-label AUROC:")
        for name, row in per_label.items():
            auroc = row.get("auroc")
            lines.append(f"    {name:<28} {'n/a' if auroc is None else f'{auroc:.4f}'}   (prevalence {row.get('prevalence', 0):.3f})")
    return "\n".join(lines)
