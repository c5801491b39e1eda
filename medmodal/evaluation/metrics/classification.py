"""Multi-label classification metrics (scikit-learn), as a flat JSON-serialisable dict.

Prediction rule: label ``c`` is predicted present when ``probs[:, c] >= threshold[c]``
(the same ``>=`` as scikit-learn's ``precision_recall_curve``, so thresholds from
:func:`best_f1_thresholds` reproduce their F1).

Undefined values are ``None``, never NaN:

- AUROC of a label whose targets are all 0 or all 1 (scikit-learn raises); such
  labels are left out of ``auroc_macro`` and counted in ``auroc_labels_excluded``
  (``auroc_labels_used`` counts the others);
- average precision of a label without positives (likewise for the macro mean).

Precision / recall / F1 with an empty denominator are 0 (scikit-learn's
``zero_division=0``), so ``f1_macro`` averages over every label.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medmodal.evaluation.metrics._arrays import mean_or_none, probabilities_and_targets


def _thresholds(threshold: float | Sequence[float] | np.ndarray, n_labels: int) -> np.ndarray:
    thr = np.asarray(
        threshold.detach().cpu() if hasattr(threshold, "detach") else threshold, dtype=np.float64
    )
    if thr.ndim == 0:
        thr = np.full(n_labels, float(thr))
    if thr.shape != (n_labels,):
        raise ValueError(f"threshold: one value or one per label ({n_labels}), got shape {thr.shape}")
    return thr


def classification_metrics(
    probs: Any,
    targets: Any,
    label_names: Sequence[str] | None = None,
    threshold: float | Sequence[float] | np.ndarray = 0.5,
) -> dict[str, Any]:
    """AUROC, average precision, F1, accuracy and exact match of multi-label predictions.

    Args:
        probs: float ``[N, C]`` probabilities (after the sigmoid), numpy / list / torch.
        targets: ``[N, C]`` 0/1 ground truth.
        label_names: ``C`` names for ``per_label`` (default ``label_0`` ...).
        threshold: one threshold, or ``C`` per-label thresholds (e.g. from
            :func:`best_f1_thresholds` on the validation split).

    Returns:
        ``{"auroc_macro", "auroc_micro", "auroc_labels_used", "auroc_labels_excluded",
        "average_precision_macro", "f1_macro", "accuracy" (mean per-label accuracy),
        "exact_match" (all C labels right), "n_samples",
        "per_label": {name: {"auroc", "average_precision", "f1", "precision", "recall",
        "accuracy", "prevalence", "n_positive", "threshold"}}}``.
        ``auroc_micro`` pools every (sample, label) pair.
    """
    p, t = probabilities_and_targets(probs, targets)
    n, c = p.shape
    names = list(label_names) if label_names is not None else [f"label_{i}" for i in range(c)]
    if len(names) != c:
        raise ValueError(f"label_names has {len(names)} names for {c} labels")
    thr = _thresholds(threshold, c)
    pred = (p >= thr).astype(np.int64)

    precision, recall, f1, _ = precision_recall_fscore_support(t, pred, average=None, zero_division=0)
    per_label: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        n_pos = int(t[:, j].sum())
        both_classes = 0 < n_pos < n
        per_label[name] = {
            "auroc": float(roc_auc_score(t[:, j], p[:, j])) if both_classes else None,
            "average_precision": float(average_precision_score(t[:, j], p[:, j])) if n_pos > 0 else None,
            "f1": float(f1[j]),
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "accuracy": float((pred[:, j] == t[:, j]).mean()),
            "prevalence": n_pos / n,
            "n_positive": n_pos,
            "threshold": float(thr[j]),
        }

    aurocs = [v["auroc"] for v in per_label.values()]
    flat_t = t.ravel()
    return {
        "auroc_macro": mean_or_none(aurocs),
        "auroc_micro": float(roc_auc_score(flat_t, p.ravel())) if 0 < flat_t.sum() < flat_t.size else None,
        "auroc_labels_used": sum(a is not None for a in aurocs),
        "auroc_labels_excluded": sum(a is None for a in aurocs),
        "average_precision_macro": mean_or_none([v["average_precision"] for v in per_label.values()]),
        "f1_macro": float(np.mean(f1)),
        "accuracy": float((pred == t).mean()),
        "exact_match": float(accuracy_score(t, pred)),  # subset accuracy for multi-label input
        "n_samples": n,
        "per_label": per_label,
    }


def best_f1_thresholds(probs: Any, targets: Any, default: float = 0.5) -> np.ndarray:
    """Per-label threshold that maximises F1 on ``(probs, targets)`` (tune on validation, apply on test).

    Candidates are the distinct scores of the label (scikit-learn's
    ``precision_recall_curve``); with ``probs >= threshold`` the returned value
    reproduces the best F1 on these data. Ties go to the lowest such threshold.
    A label without positives gets ``default``.

    Args:
        probs: float ``[N, C]`` probabilities.
        targets: ``[N, C]`` 0/1.

    Returns:
        float64 ``[C]``.
    """
    p, t = probabilities_and_targets(probs, targets)
    out = np.full(p.shape[1], float(default))
    for j in range(p.shape[1]):
        if t[:, j].sum() == 0:
            continue
        precision, recall, thresholds = precision_recall_curve(t[:, j], p[:, j])
        # the last (precision=1, recall=0) point has no threshold
        precision, recall = precision[:-1], recall[:-1]
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        out[j] = thresholds[int(np.argmax(f1))]
    return out


# A threshold above every probability: the label is never predicted.
NEVER_THRESHOLD = 2.0


def best_micro_f1_thresholds(probs: Any, targets: Any, rounds: int = 3) -> np.ndarray:
    """Per-label thresholds that maximise the **micro** F1 (pooled over every (sample, label) pair)
    on ``(probs, targets)``: tune on validation, apply on test.

    The per-label rule (:func:`best_f1_thresholds`) lets a weak label claim many false positives
    when that buys it a little recall; the pooled F1 of a set of findings (what the CE F1 of a
    report scores, :mod:`~medmodal.evaluation.metrics.clinical_efficacy`) pays for every one of
    them. Coordinate ascent from the per-label thresholds: each round visits the labels in order
    and moves one label's threshold to the candidate with the best pooled F1, the others fixed.
    Candidates are the label's distinct scores and :data:`NEVER_THRESHOLD` (never predicted);
    ties go to the highest candidate (the fewest predictions).

    Args:
        probs: float ``[N, C]`` probabilities.
        targets: ``[N, C]`` 0/1.
        rounds: passes over the labels.

    Returns:
        float64 ``[C]``; ``probs >= thresholds`` reproduces the best pooled F1 found.
    """
    p, t = probabilities_and_targets(probs, targets)
    out = best_f1_thresholds(p, t)
    predicted = p >= out
    for _ in range(rounds):
        for j in range(p.shape[1]):
            others = np.delete(np.arange(p.shape[1]), j)
            true_pos_others = int((predicted[:, others] & (t[:, others] == 1)).sum())
            wrong_others = int((predicted[:, others] != (t[:, others] == 1)).sum())  # FP + FN
            candidates, true_pos, false_pos = _counts_at_each_score(p[:, j], t[:, j])
            false_neg = int(t[:, j].sum()) - true_pos
            tp = true_pos_others + true_pos
            denominator = 2 * tp + wrong_others + false_pos + false_neg
            f1 = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
            out[j] = candidates[int(np.argmax(f1))]  # candidates descending: ties -> the highest
            predicted[:, j] = p[:, j] >= out[j]
    return out


def _counts_at_each_score(
    scores: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (:data:`NEVER_THRESHOLD`, then the distinct ``scores`` descending) and the
    true / false positives of ``scores >= candidate`` for each (all ``[K]``)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_targets = scores[order], targets[order]
    true_pos = np.cumsum(sorted_targets == 1)
    false_pos = np.cumsum(sorted_targets != 1)
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(scores) - 1]  # ties end here
    candidates = np.r_[NEVER_THRESHOLD, sorted_scores[last_of_each]]
    return candidates, np.r_[0, true_pos[last_of_each]], np.r_[0, false_pos[last_of_each]]
