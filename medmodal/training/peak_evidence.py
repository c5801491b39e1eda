"""The box head's heatmap peaks as classification evidence, fitted on validation when training ends.

With ``model.localization.peak_evidence: true`` (the model side: :mod:`medmodal.models.peak_evidence`),
:class:`FitPeakEvidence` runs after the box head's refit and before the report bank is filled, on
the best checkpoint's weights:

1. one pass in eval mode over the validation studies keeps the classifier's logits without the
   peaks (after the deep-head weight, before any calibration) ``z`` [V, C], each finding's highest
   heatmap logit ``h`` [V, C] and the labels;
2. for the findings with at least one training box, Platt scaling of ``h`` on the validation labels
   (:func:`~medmodal.models.calibration.fit_platt_scaling`: logits on the classifier's scale);
3. the weight ``w`` is the value of :data:`PEAK_WEIGHTS` whose mixed logits have the best
   validation macro AUROC, the smallest on ties, so ``w = 0`` (the classifier alone) unless the
   peaks help there;
4. a decoder conditioned on the findings with thresholds chosen on validation (``threshold:
   val_f1`` / ``val_micro_f1``) gets them chosen again on the mixed probabilities.

``RUN/peak_evidence.json`` keeps the validation AUROC at each weight, the choice and the fits. The
stage depends only on the checkpoint's weights and the validation studies, so a run killed during
it and run again writes the same values. Nothing here reads the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from medmodal.data.dataset import StudyDataset
from medmodal.data.types import Study
from medmodal.evaluation.metrics import best_f1_thresholds, best_micro_f1_thresholds, classification_metrics
from medmodal.models.calibration import fit_platt_scaling
from medmodal.models.multimodal import MultimodalModel
from medmodal.runs import RunDir, write_json_atomic
from medmodal.training.checkpoints import BestCheckpointStage, eval_batches

log = logging.getLogger(__name__)

PEAK_EVIDENCE_FILE = "peak_evidence.json"
# The weights of the peaks tried on validation (0 = the classifier alone, 1 = the peaks alone).
PEAK_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def boxed_findings(studies: Sequence[Study], labels: Sequence[str]) -> list[bool]:
    """Per label, whether any of ``studies`` has a box of it (what the box head was trained on)."""
    seen = {box.label for study in studies for box in study.boxes}
    return [label in seen for label in labels]


class FitPeakEvidence(BestCheckpointStage):
    """At the end of ``fit``: the model's peak evidence fitted on ``validation`` (module docstring)."""

    name = "peak_evidence"

    def __init__(
        self,
        run: RunDir,
        validation: StudyDataset,
        labels: Sequence[str],
        boxed: Sequence[bool],
        batch_size: int,
        num_workers: int = 0,
        finding_threshold_rule: str | float | None = None,
    ) -> None:
        super().__init__(run)
        self.validation, self.labels, self.boxed = validation, list(labels), list(boxed)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.finding_threshold_rule = finding_threshold_rule

    def run_stage(self, pl_module: L.LightningModule) -> dict[str, Tensor]:
        model: MultimodalModel = pl_module.model  # type: ignore[assignment]
        assert model.peak_evidence is not None  # the callback is added for models with peak evidence only
        scores = validation_scores(model, self.validation, self.batch_size, self.num_workers)
        chosen = fit_peak_evidence(model, *scores, self.boxed, self.labels)
        state = model.peak_evidence.state_dict(prefix="model.peak_evidence.")
        if model.condition_on_findings and self.finding_threshold_rule in ("val_f1", "val_micro_f1"):
            probs = torch.sigmoid(model.peak_evidence.mix(scores[0], scores[1], scores[3]))
            choose = (
                best_micro_f1_thresholds
                if self.finding_threshold_rule == "val_micro_f1"
                else best_f1_thresholds
            )
            thresholds = choose(probs.numpy(), scores[2].numpy())
            model.set_finding_thresholds(torch.as_tensor(np.asarray(thresholds), dtype=torch.float32))
            chosen["finding_thresholds"] = [round(float(t), 4) for t in thresholds]
            state["model.finding_thresholds"] = model.finding_thresholds
        write_json_atomic(self.run.root / PEAK_EVIDENCE_FILE, chosen)
        log.info(
            "peak evidence: weight %.2f chosen on validation (macro AUROC by weight %s)",
            chosen["weight"], chosen["val_auroc_macro_by_weight"],
        )  # fmt: skip
        return state


@torch.no_grad()
def validation_scores(
    model: MultimodalModel, studies: StudyDataset, batch_size: int, num_workers: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(classifier logits without the peaks [V, C], heatmap peaks [V, C], labels [V, C], float64;
    whether the model saw each study's image [V]) over ``studies`` in eval mode: the logits after
    the deep-head weight, before any calibration."""
    logits, peaks, labels, seen = [], [], [], []
    for batch in eval_batches(model, studies, batch_size, num_workers):
        image, text, image_present, text_present = model.encode(batch, modality_dropout=False)
        vector, fusion_output = model.fuse(image, text)
        added = model.unimodal_logits(batch, image, text, image_present, text_present)[2]
        logits.append(model.uncalibrated_logits(vector, fusion_output, added).cpu())
        peaks.append(cast(Tensor, model.heatmap_peaks(image, vector, batch)).cpu())
        labels.append(batch["labels"].cpu())
        seen.append(cast(Tensor, image_present).cpu())
    return torch.cat(logits).double(), torch.cat(peaks).double(), torch.cat(labels).double(), torch.cat(seen)


def macro_auroc(targets: np.ndarray, scores: np.ndarray) -> float | None:
    """Mean AUROC over the labels with both classes in ``targets`` (None when there is none): the
    evaluation's own metric (:func:`~medmodal.evaluation.metrics.classification_metrics`), read on
    each column's ranks scaled to (0, 1]. AUROC depends on the order alone, and the metric takes
    probabilities, which a sigmoid of large logits would tie at 1."""
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=0) / len(scores)
    return classification_metrics(ranks, targets)["auroc_macro"]


def fit_peak_evidence(
    model: MultimodalModel,
    logits: Tensor,
    peaks: Tensor,
    targets: Tensor,
    seen: Tensor,
    boxed: Sequence[bool],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Set ``model.peak_evidence`` from validation ``logits``, ``peaks``, ``targets`` [V, C] and
    ``seen`` [V] (:func:`validation_scores`; module docstring, steps 2-3) for the ``boxed`` findings
    [C] named ``labels``; returns the choice. The Platt scaling is fitted on the studies whose image
    the model saw."""
    evidence = model.peak_evidence
    if evidence is None:
        raise ValueError("this model has no peak evidence (model.localization.peak_evidence)")
    mask = torch.as_tensor(list(boxed), dtype=torch.bool)
    platt = fit_platt_scaling(peaks[seen].numpy(), targets[seen].numpy(), list(labels))
    scale = torch.where(mask, torch.as_tensor(platt.scale, dtype=torch.float64), 1.0)
    bias = torch.where(mask, torch.as_tensor(platt.bias, dtype=torch.float64), 0.0)
    scores: dict[float, float | None] = {}
    for weight in PEAK_WEIGHTS:
        evidence.set(weight, scale, bias, mask)
        scores[weight] = macro_auroc(targets.numpy(), evidence.mix(logits, peaks, seen).numpy())
    known = {w: s for w, s in scores.items() if s is not None}
    # the smallest weight with the best score (max keeps the first of equal ones)
    chosen = max(known, key=lambda w: known[w]) if known and bool(mask.any()) else 0.0
    evidence.set(chosen, scale, bias, mask)
    return {
        "weight": chosen,
        "val_auroc_macro_by_weight": {str(w): None if s is None else round(s, 4) for w, s in scores.items()},
        "boxed": dict(zip(labels, mask.tolist())),
        "scale": dict(zip(labels, [round(float(v), 4) for v in scale])),
        "bias": dict(zip(labels, [round(float(v), 4) for v in bias])),
        "n_val": len(targets),
    }
