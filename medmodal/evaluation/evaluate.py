"""``medmodal evaluate``: run a trained model over a split and score every task.

Writes ``metrics.json`` (test split; other splits go to ``metrics_<split>.json``)
and ``predictions/<split>.jsonl`` (one line per study, the raw material for
bootstrap confidence intervals and error analysis) into the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medmodal.data.dataset import make_dataloader
from medmodal.data.pipeline import build_dataset
from medmodal.data.types import Study
from medmodal.evaluation.evaluate_baseline import evaluate_baseline_run
from medmodal.evaluation.scoring import (
    SplitPredictions,
    check_hide_masks,
    detections_as_lists,
    score_predictions,
    write_predictions,
)
from medmodal.runs import write_json_atomic
from medmodal.training.baselines import is_baseline_run
from medmodal.training.loading import TrainedRun, load_trained


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
    hide = check_hide_masks(hide, len(studies))
    cfg = trained.config
    dataset = build_dataset(studies, trained.tokenizer, trained.labels, cfg, train=False)
    loader = make_dataloader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=cfg.data.num_workers, seed=0
    )
    model = trained.model
    device = next(model.parameters()).device
    can_generate = generate and cfg.model.heads.generation
    probs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    img_p: list[torch.Tensor] = []
    txt_p: list[torch.Tensor] = []
    boxes: list[torch.Tensor] = []
    generated: list[str] = []
    detections: list[list[tuple[int, list[float], float]]] = []
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
            assert model.localizer is not None  # the localization output comes from it
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
    metrics = score_predictions(
        preds,
        trained.labels,
        threshold=trained.decision_thresholds(),
        uncertain_as=cfg.evaluate.uncertain_as,
        calibrated=trained.calibrated,
    )
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
            lines.append(
                f"    {name:<28} {'n/a' if auroc is None else f'{auroc:.4f}'}   (prevalence {row.get('prevalence', 0):.3f})"
            )
    return "\n".join(lines)
