"""Clinical efficacy (CE) of generated reports: do they state the same findings as the references?

Both the reference and the generated report go through the same
:class:`~medmodal.labeling.ReportLabeler`; each becomes a presence vector over
the findings (``to_binary``: positive = present, negative / absent = not,
uncertain as ``uncertain_as``). Precision / recall / F1 then compare the
generated vectors with the reference ones (scikit-learn
``precision_recall_fscore_support``).

- ``ce_precision`` / ``ce_recall`` / ``ce_f1``: **micro**-averaged, i.e. pooled
  over every (report, finding) pair -- the "CE metrics" of the MIMIC-CXR
  report-generation literature (e.g. Chen et al., R2Gen, EMNLP 2020, with the
  CheXpert labeler; here our medspaCy labeler, so numbers are comparable across
  medmodal runs, not with papers).
- ``ce_f1_macro``: mean of the per-finding F1 over the findings where F1 is
  defined; a finding absent from both the references and the generated reports
  (0/0) is left out and ``ce_labels_used`` counts the others.
- ``n_distinct_reports`` / ``most_common_report_count``: how many different reports were
  generated (compared as tokens, :func:`~medmodal.evaluation.metrics.generation.report_counts`)
  and how often the commonest one was; ``n_with_finding``: references stating at least one
  finding; ``distinct_fraction_with_finding`` = ``n_distinct_reports / n_with_finding`` (a model
  that writes the same few reports for every abnormal study scores low; docs/reports.md).
- Undefined values are ``None`` (e.g. precision when no finding was generated).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from medmodal.evaluation.metrics._arrays import mean_or_none, none_if_nan
from medmodal.evaluation.metrics.generation import report_counts
from medmodal.labeling import to_binary

if TYPE_CHECKING:
    from medmodal.labeling import ReportLabeler


def clinical_efficacy(
    references: Sequence[str],
    hypotheses: Sequence[str],
    labeler: ReportLabeler,
    findings: Sequence[str] | None = None,
    uncertain_as: Literal["positive", "negative"] = "positive",
    batch_size: int = 256,
) -> dict[str, Any]:
    """CE precision / recall / F1 of generated reports against references.

    Args:
        references: ``N`` reference reports.
        hypotheses: ``N`` generated reports (empty strings allowed: no finding).
        labeler: the :class:`~medmodal.labeling.ReportLabeler` (e.g.
            ``medmodal.labeling.default_labeler()``).
        findings: the ``F`` findings to score; default all of ``labeler.findings``
            (the ``normal`` flag is not a finding; name it here to include it).
        uncertain_as: whether an uncertain mention counts as present.

    Returns:
        ``{"ce_precision", "ce_recall", "ce_f1", "ce_f1_macro", "ce_labels_used",
        "n_reports", "n_distinct_reports", "most_common_report_count", "n_with_finding",
        "distinct_fraction_with_finding", "per_label": {finding: {"precision", "recall", "f1",
        "n_reference_positive", "n_hypothesis_positive"}}}``.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    if len(references) == 0:
        raise ValueError("no reports to score")
    names = list(findings) if findings is not None else list(labeler.findings)
    unknown = [f for f in names if f not in labeler.label_names]
    if unknown:
        raise ValueError(
            f"findings {unknown} are not in the labeler's vocabulary {list(labeler.label_names)}"
        )

    y_true = to_binary(labeler.label_many(references, batch_size=batch_size), names, uncertain_as)
    y_pred = to_binary(labeler.label_many(hypotheses, batch_size=batch_size), names, uncertain_as)

    # zero_division=nan marks the 0/0 cases, reported as None and left out of the macro mean.
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=np.nan)
    micro_p, micro_r, micro_f, _ = precision_recall_fscore_support(
        y_true, y_pred, average="micro", zero_division=np.nan
    )
    per_label = {
        name: {
            "precision": none_if_nan(p[j]),
            "recall": none_if_nan(r[j]),
            "f1": none_if_nan(f[j]),
            "n_reference_positive": int(y_true[:, j].sum()),
            "n_hypothesis_positive": int(y_pred[:, j].sum()),
        }
        for j, name in enumerate(names)
    }
    f1s = [v["f1"] for v in per_label.values()]
    return {
        "ce_precision": none_if_nan(micro_p),
        "ce_recall": none_if_nan(micro_r),
        "ce_f1": none_if_nan(micro_f),
        "ce_f1_macro": mean_or_none(f1s),
        "ce_labels_used": sum(v is not None for v in f1s),
        "n_reports": len(references),
        **report_variety(hypotheses, n_with_finding=int(y_true.any(axis=1).sum())),
        "per_label": per_label,
    }


def report_variety(hypotheses: Sequence[str], n_with_finding: int) -> dict[str, Any]:
    """Distinct generated reports, the commonest one's count, and the distinct count per
    reference with a finding (None when no reference has one)."""
    counts = report_counts(hypotheses)
    return {
        "n_distinct_reports": len(counts),
        "most_common_report_count": counts.most_common(1)[0][1] if counts else 0,
        "n_with_finding": n_with_finding,
        "distinct_fraction_with_finding": len(counts) / n_with_finding if n_with_finding else None,
    }
