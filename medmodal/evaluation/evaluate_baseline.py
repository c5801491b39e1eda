"""Evaluation of a baseline run folder (:mod:`medmodal.training.baselines`) with the deep runs' code.

:func:`predict_baseline_split` returns the same :class:`SplitPredictions` as
:func:`~medmodal.evaluation.evaluate.predict_split`, so :func:`~medmodal.evaluation.scoring.score_predictions` and
:func:`write_predictions` give ``metrics.json`` and ``predictions/<split>.jsonl`` in the
deep runs' format, and the benchmark's bootstrap CIs and paired tests apply unchanged.
``medmodal evaluate RUN`` dispatches here for a baseline run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medmodal.data.pipeline import read_split
from medmodal.data.types import Study
from medmodal.evaluation.scoring import (
    SplitPredictions,
    check_hide_masks,
    score_predictions,
    write_predictions,
)
from medmodal.models.baselines.base import BaselineData
from medmodal.runs import write_json_atomic
from medmodal.training.baselines import BaselineRun, load_baseline


def predict_baseline_split(
    fitted: BaselineRun,
    studies: list[Study],
    *,
    generate: bool = True,
    hide: dict[str, np.ndarray] | None = None,
) -> SplitPredictions:
    """Every fitted part of the run over ``studies`` (``hide``: as in ``predict_split``).

    probs: the classifier's (the training prevalence for every study when the run has none);
    boxes / generated: None without a box / report baseline (or with ``generate=False``).
    """
    hide = check_hide_masks(hide, len(studies))
    data = BaselineData.from_config(studies, fitted.labels, fitted.config)
    targets = data.targets().astype(np.float32)
    classifier = fitted.classifier
    if classifier is not None:
        probs = classifier.predict(data, hide)
        components = classifier.components(data, hide)
    else:
        prevalence = json.loads(fitted.run.labels.read_text())["train_prevalence"]
        probs = np.tile([prevalence[name] for name in fitted.labels], (len(studies), 1))
        components = {}
    boxes = fitted.parts["boxes"].predict(data, hide) if "boxes" in fitted.parts else None  # type: ignore[attr-defined]
    generated = None
    if generate and "report" in fitted.parts:
        generated = fitted.parts["report"].predict(data, probs=probs, hide=hide)  # type: ignore[attr-defined]
    return SplitPredictions(
        studies=studies,
        probs=probs,
        targets=targets,
        image_logits_probs=components.get("image"),
        text_logits_probs=components.get("text"),
        boxes=boxes,
        generated=generated,
        references=data.references(),
    )


def evaluate_baseline_run(
    run_dir: str | Path, data: str | Path | None = None, *, split: str = "test"
) -> dict[str, Any]:
    """Score the baseline run on ``split`` of ``data`` (default: the data it was fitted on); write and return metrics."""
    fitted = load_baseline(run_dir)
    cfg = fitted.config
    if data is None:
        data = fitted.run.training_data()
    studies = read_split(data, cfg, fitted.labels, split)
    preds = predict_baseline_split(fitted, studies)
    metrics = score_predictions(
        preds, fitted.labels, threshold=fitted.decision_thresholds(), uncertain_as=cfg.evaluate.uncertain_as
    )
    metrics = {
        "run": str(fitted.run.root),
        "data": str(Path(data).resolve()),
        "split": split,
        "baseline": True,
        **metrics,
    }
    out = fitted.run.metrics if split == "test" else fitted.run.root / f"metrics_{split}.json"
    write_json_atomic(out, metrics)
    write_predictions(preds, fitted.labels, fitted.run.predictions(split))
    return metrics
