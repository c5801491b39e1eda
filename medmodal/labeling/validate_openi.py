"""Validate the report labeler on real reports: agreement with the Open-i (Indiana) MeSH tags.

For every Open-i report with MeSH indexing, the labeler (:func:`default_labeler`) reads
the report's ``findings`` and ``impression`` and its output is compared, per finding,
with the report's MeSH *major* terms mapped to findings by
:data:`medmodal.data.importers.openi.MESH_LABELS` (and the MeSH term ``normal`` to the
labeler's ``normal`` flag). Reports indexed ``No Indexing`` are left out (not annotated).

The MeSH tags are not a perfect reference either: they were assigned by human indexers
from the same text, with their own conventions (e.g. "Airspace Disease" is mapped to
``opacity`` while the labeler calls "airspace disease" consolidation). Disagreement
therefore mixes labeler errors and differences of convention; the per-finding counts
let one look at both.

Command: ``medmodal validate-labeler`` (``docs/labeler.md`` has the measured table).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from medmodal.data.importers.openi import OpenIReport, find_openi_reports, iter_openi_xml, parse_openi_report

# Findings that both the MeSH mapping and the shipped labeler vocabulary name, plus "normal".
DEFAULT_FINDINGS = (
    "cardiomegaly", "effusion", "opacity", "atelectasis", "nodule", "pneumothorax", "edema",
    "consolidation", "pneumonia", "emphysema", "granuloma", "hernia", "scoliosis", "fracture",
    "mass", "fibrosis", "normal",
)  # fmt: skip


def load_openi_reports(source: str | Path | None = None) -> list[OpenIReport]:
    """Every report of the Open-i archive (default: :func:`find_openi_reports`)."""
    path = Path(source) if source is not None else find_openi_reports()
    if path is None:
        raise FileNotFoundError(
            "Open-i reports not found: run `make setup` (puts them in .cache/openi/), "
            "set MEDMODAL_OPENI_REPORTS, or pass --source"
        )
    if not path.exists():
        raise FileNotFoundError(f"Open-i reports not found: {path}")
    return [parse_openi_report(xml, name) for name, xml in iter_openi_xml(path)]


def is_indexed(report: OpenIReport) -> bool:
    """False for reports without MeSH major terms or indexed ``No Indexing``."""
    terms = [t.strip().lower() for t in report.mesh_major]
    return bool(terms) and "no indexing" not in terms


def reference_matrix(reports: Sequence[OpenIReport], findings: Sequence[str]) -> np.ndarray:
    """``[N, F]`` 0/1 reference from the MeSH major terms (``normal`` from the term ``normal``)."""
    out = np.zeros((len(reports), len(findings)), dtype=np.int64)
    for i, report in enumerate(reports):
        present = set(report.labels)
        if any(t.strip().lower() == "normal" for t in report.mesh_major):
            present.add("normal")
        for j, finding in enumerate(findings):
            out[i, j] = finding in present
    return out


def labeler_matrix(texts: Sequence[str], findings: Sequence[str], uncertain_as: str = "positive", labeler=None) -> np.ndarray:
    """``[N, F]`` 0/1 labeler output; ``normal`` is 1 when the labeler's normal flag is positive."""
    from medmodal.labeling import default_labeler, to_binary

    labeler = labeler or default_labeler()
    labels = labeler.label_many(texts)
    unknown = [f for f in findings if f not in labeler.label_names]
    if unknown:
        raise ValueError(f"findings {unknown} are not in the labeler's vocabulary ({', '.join(labeler.label_names)})")
    return to_binary(labels, findings, uncertain_as=uncertain_as)


def agreement(reference: np.ndarray, predicted: np.ndarray, findings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per finding: precision, recall, F1 (scikit-learn, 0 where undefined), support and counts."""
    precision, recall, f1, support = precision_recall_fscore_support(reference, predicted, average=None, zero_division=0)
    result = {}
    for j, finding in enumerate(findings):
        tp = int(((reference[:, j] == 1) & (predicted[:, j] == 1)).sum())
        result[finding] = {
            "precision": float(precision[j]), "recall": float(recall[j]), "f1": float(f1[j]),
            "support": int(support[j]), "predicted": int(predicted[:, j].sum()), "true_positive": tp,
        }
    return result


def validate_on_openi(
    source: str | Path | None = None,
    *,
    findings: Sequence[str] = DEFAULT_FINDINGS,
    fields: Sequence[str] = ("findings", "impression"),
    uncertain_as: str = "positive",
    labeler=None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Label the indexed Open-i reports and score the labeler against their MeSH tags.

    Returns ``{"reports": N, "skipped_not_indexed": K, "fields", "uncertain_as", "seconds",
    "per_finding": {finding: {precision, recall, f1, support, predicted, true_positive}},
    "macro": {precision, recall, f1}, "micro": {...}}`` (macro over findings with support > 0).
    """
    start = time.time()
    reports = load_openi_reports(source)
    indexed = [r for r in reports if is_indexed(r)]
    if limit is not None:
        indexed = indexed[:limit]
    texts = ["\n\n".join(r.sections.get(f, "") for f in fields if r.sections.get(f)) for r in indexed]
    reference = reference_matrix(indexed, findings)
    predicted = labeler_matrix(texts, findings, uncertain_as, labeler)
    per = agreement(reference, predicted, findings)
    used = [f for f in findings if per[f]["support"] > 0]
    micro_p, micro_r, micro_f, _ = precision_recall_fscore_support(
        reference.ravel(), predicted.ravel(), average="binary", zero_division=0
    )
    return {
        "reports": len(indexed),
        "skipped_not_indexed": len(reports) - len([r for r in reports if is_indexed(r)]),
        "fields": list(fields),
        "uncertain_as": uncertain_as,
        "seconds": round(time.time() - start, 1),
        "per_finding": per,
        "macro": {k: float(np.mean([per[f][k] for f in used])) for k in ("precision", "recall", "f1")},
        "micro": {"precision": float(micro_p), "recall": float(micro_r), "f1": float(micro_f)},
    }


def format_validation(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`validate_on_openi`'s result."""
    lines = [
        f"{result['reports']} indexed Open-i reports ({result['skipped_not_indexed']} not indexed, left out); "
        f"fields: {', '.join(result['fields'])}; uncertain counted as {result['uncertain_as']}",
        "",
        "| finding | MeSH positives | labeler positives | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for finding, row in result["per_finding"].items():
        lines.append(f"| {finding} | {row['support']} | {row['predicted']} | {row['precision']:.3f} | "
                     f"{row['recall']:.3f} | {row['f1']:.3f} |")
    for name in ("macro", "micro"):
        row = result[name]
        lines.append(f"| **{name}** | | | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |")
    return "\n".join(lines)
