"""Validate the report labeler on real reports: agreement with the Open-i (Indiana) MeSH tags.

For every Open-i report with MeSH indexing, the labeler reads the report's ``findings`` and
``impression`` and its output is compared, per finding, with the report's MeSH *major* terms
mapped to findings by :data:`medmodal.data.importers.openi.MESH_LABELS` plus
:data:`QUALIFIED_MESH` (and the MeSH term ``normal`` to the labeler's ``normal`` flag).
Reports indexed ``No Indexing`` are left out (not annotated).

Protocol: reports are split once, by a fixed hash of the report id (:func:`report_half`), into
a development half (error analysis, ``list_errors``) and a held-out half (scored only).

The MeSH tags are not a perfect reference either: they were assigned by human indexers
from the same text, with their own conventions (e.g. the labeler's ``fibrosis`` includes
"scarring", indexed ``Cicatrix``). Disagreement therefore mixes labeler errors and
differences of convention; the per-finding counts let one look at both.

Command: ``medmodal validate-labeler [--half dev|heldout|all]`` (``docs/labeler.md`` has the
measured tables).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

from medmodal.data.importers.openi import (
    OpenIReport,
    find_openi_reports,
    iter_openi_xml,
    mesh_labels,
    parse_openi_report,
)
from medmodal.errors import InputNotFoundError
from medmodal.labeling import ReportLabeler, default_labeler, to_binary

# Findings that both the MeSH mapping and the shipped labeler vocabulary name, plus "normal".
DEFAULT_FINDINGS = (
    "cardiomegaly", "effusion", "opacity", "atelectasis", "nodule", "pneumothorax", "edema", "congestion",
    "consolidation", "pneumonia", "emphysema", "granuloma", "hernia", "scoliosis", "fracture",
    "mass", "fibrosis", "normal",
)  # fmt: skip


# The 7 common findings of issue 12 (the headline "mean F1" is over these).
COMMON_FINDINGS = ("cardiomegaly", "effusion", "pneumothorax", "nodule", "atelectasis", "opacity", "edema")

# Development / held-out protocol. Reports are split once, by a fixed hash of the report id, into a
# development half (error analysis and every vocabulary / rule / mapping change are made on it only)
# and a held-out half (only ever scored, never read for errors); the held-out figure is the headline.
HALVES = ("all", "dev", "heldout")
_SPLIT_SALT = "medmodal-labeler-split-v1"


def report_half(uid: str) -> str:
    """``"dev"`` or ``"heldout"``: the half of the fixed development / held-out split this report id is in."""
    digest = hashlib.sha256(f"{_SPLIT_SALT}:{uid}".encode()).digest()
    return "dev" if digest[0] % 2 == 0 else "heldout"


def select_half(reports: Sequence[OpenIReport], half: str) -> list[OpenIReport]:
    """The reports of one half (``"all"``: every report)."""
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    return [r for r in reports if half == "all" or report_half(r.uid) == half]


def load_openi_reports(source: str | Path | None = None) -> list[OpenIReport]:
    """Every report of the Open-i archive (default: :func:`find_openi_reports`)."""
    path = Path(source) if source is not None else find_openi_reports()
    if path is None:
        raise InputNotFoundError(
            "Open-i reports not found: run `make setup` (puts them in .cache/openi/), "
            "set MEDMODAL_OPENI_REPORTS, or pass --source"
        )
    if not path.exists():
        raise InputNotFoundError(f"Open-i reports not found: {path}")
    return [parse_openi_report(xml, name) for name, xml in iter_openi_xml(path)]


def is_indexed(report: OpenIReport) -> bool:
    """False for reports without MeSH major terms or indexed ``No Indexing``."""
    terms = [t.strip().lower() for t in report.mesh_major]
    return bool(terms) and "no indexing" not in terms


# MeSH headings whose meaning depends on their qualifiers (``Heading/qualifier/...``), used by the
# validation on top of the importer's heading table (MESH_LABELS). heading -> (finding, qualifiers
# of which one must be present). Clinical reasons in docs/labeler.md ("MeSH -> finding mapping").
QUALIFIED_MESH: dict[str, tuple[str, frozenset[str]]] = {
    # an enlarged cardiac silhouette is how cardiomegaly is seen on a radiograph
    "cardiac shadow": ("cardiomegaly", frozenset({"enlarged", "borderline"})),
    # Not mapped: "Density". Fleischner's glossary reads "density" as "opacity", but the Open-i indexers
    # use Density for radiodense objects (calcified granulomas, bullet fragments, a hiatal hernia,
    # superimposed bone); mapping it to opacity lowered agreement on the development half.
}


def reference_findings(terms: Sequence[str]) -> set[str]:
    """Findings of a report's MeSH major terms: the importer's heading table plus :data:`QUALIFIED_MESH`."""
    present = set(mesh_labels(terms))
    for term in terms:
        parts = [" ".join(p.lower().split()) for p in term.split("/")]
        if parts[0] == "normal":
            present.add("normal")
        rule = QUALIFIED_MESH.get(parts[0])
        if rule is not None and rule[1].intersection(parts[1:]):
            present.add(rule[0])
    return present


def reference_matrix(reports: Sequence[OpenIReport], findings: Sequence[str]) -> np.ndarray:
    """``[N, F]`` 0/1 reference from the MeSH major terms (:func:`reference_findings`; ``normal`` from
    the term ``normal``)."""
    out = np.zeros((len(reports), len(findings)), dtype=np.int64)
    for i, report in enumerate(reports):
        present = reference_findings(report.mesh_major)
        for j, finding in enumerate(findings):
            out[i, j] = finding in present
    return out


def labeler_matrix(
    texts: Sequence[str],
    findings: Sequence[str],
    uncertain_as: Literal["positive", "negative"] = "negative",
    labeler=None,
    probable_as: Literal["uncertain", "positive"] = "positive",
) -> np.ndarray:
    """``[N, F]`` 0/1 labeler output; ``normal`` is 1 when the labeler's normal flag is positive.

    Without ``labeler``: the shipped labeler with ``probable_as`` (``ReportLabeler(probable_as=...)``).
    """
    if labeler is None:
        labeler = default_labeler() if probable_as == "uncertain" else ReportLabeler(probable_as=probable_as)
    labels = labeler.label_many(texts)
    unknown = [f for f in findings if f not in labeler.label_names]
    if unknown:
        raise ValueError(
            f"findings {unknown} are not in the labeler's vocabulary ({', '.join(labeler.label_names)})"
        )
    return to_binary(labels, findings, uncertain_as=uncertain_as)


def agreement(
    reference: np.ndarray, predicted: np.ndarray, findings: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per finding: precision, recall, F1 (scikit-learn, 0 where undefined), support and counts."""
    precision, recall, f1, support = precision_recall_fscore_support(
        reference, predicted, average=None, zero_division=0
    )
    result = {}
    for j, finding in enumerate(findings):
        tp = int(((reference[:, j] == 1) & (predicted[:, j] == 1)).sum())
        result[finding] = {
            "precision": float(precision[j]),
            "recall": float(recall[j]),
            "f1": float(f1[j]),
            "support": int(support[j]),
            "predicted": int(predicted[:, j].sum()),
            "true_positive": tp,
        }
    return result


def validate_on_openi(
    source: str | Path | None = None,
    *,
    findings: Sequence[str] = DEFAULT_FINDINGS,
    fields: Sequence[str] = ("findings", "impression"),
    uncertain_as: Literal["positive", "negative"] = "negative",
    probable_as: Literal["uncertain", "positive"] = "positive",
    labeler=None,
    limit: int | None = None,
    half: str = "all",
    list_errors: bool = False,
) -> dict[str, Any]:
    """Label the indexed Open-i reports and score the labeler against their MeSH tags.

    Defaults follow the indexers' convention, measured on the development half
    (docs/labeler.md): a hedged mention ("possible", "may represent") is not indexed
    (``uncertain_as="negative"``), a high-likelihood one ("probable", "likely") is
    (``probable_as="positive"``).

    Args:
        uncertain_as: count an uncertain label as present or absent (:func:`~medmodal.labeling.to_binary`).
        probable_as: status of high-likelihood hedges, for the labeler built here (ignored
            when ``labeler`` is given: it has its own).
        half: ``"dev"`` / ``"heldout"`` (:func:`report_half`) or ``"all"``.
        list_errors: add ``"errors"``: per finding, the false positives and false negatives
            (report id, MeSH major terms, text). Only for ``half="dev"``: the held-out half is
            scored, never read for errors.

    Returns ``{"reports": N, "skipped_not_indexed": K, "half", "fields", "uncertain_as", "seconds",
    "per_finding": {finding: {precision, recall, f1, support, predicted, true_positive}},
    "macro": {precision, recall, f1}, "micro": {...}, "common_mean_f1"}`` (macro over findings
    with support > 0; ``common_mean_f1``: mean F1 over the :data:`COMMON_FINDINGS` scored, or None).
    """
    if list_errors and half != "dev":
        raise ValueError(
            "errors are listed for the development half only (half='dev'): the held-out half is for reporting"
        )
    start = time.time()
    reports = load_openi_reports(source)
    indexed = select_half([r for r in reports if is_indexed(r)], half)
    if limit is not None:
        indexed = indexed[:limit]
    if not indexed:
        raise ValueError(f"{source or 'Open-i reports'}: no indexed report in half '{half}' to score")
    texts = [report_text(r, fields) for r in indexed]
    reference = reference_matrix(indexed, findings)
    predicted = labeler_matrix(texts, findings, uncertain_as, labeler, probable_as)
    per = agreement(reference, predicted, findings)
    used = [f for f in findings if per[f]["support"] > 0]
    common = [f for f in COMMON_FINDINGS if f in used]
    micro_p, micro_r, micro_f, _ = precision_recall_fscore_support(
        reference.ravel(), predicted.ravel(), average="binary", zero_division=0
    )
    result = {
        "reports": len(indexed),
        "skipped_not_indexed": len(reports) - len([r for r in reports if is_indexed(r)]),
        "half": half,
        "fields": list(fields),
        "uncertain_as": uncertain_as,
        "probable_as": getattr(labeler, "probable_as", "uncertain") if labeler is not None else probable_as,
        "seconds": round(time.time() - start, 1),
        "per_finding": per,
        "macro": {k: float(np.mean([per[f][k] for f in used])) for k in ("precision", "recall", "f1")},
        "micro": {"precision": float(micro_p), "recall": float(micro_r), "f1": float(micro_f)},
        "common_mean_f1": float(np.mean([per[f]["f1"] for f in common])) if common else None,
    }
    if list_errors:
        result["errors"] = disagreements(indexed, texts, reference, predicted, findings)
    return result


def report_text(report: OpenIReport, fields: Sequence[str]) -> str:
    """The sections the labeler reads, joined by a blank line (a sentence break)."""
    return "\n\n".join(report.sections[f] for f in fields if report.sections.get(f))


def disagreements(
    reports: Sequence[OpenIReport],
    texts: Sequence[str],
    reference: np.ndarray,
    predicted: np.ndarray,
    findings: Sequence[str],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per finding: ``{"false_positive": [...], "false_negative": [...]}`` with id, MeSH terms and text."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for j, finding in enumerate(findings):
        rows: dict[str, list[dict[str, Any]]] = {"false_positive": [], "false_negative": []}
        for i, report in enumerate(reports):
            kind = {(0, 1): "false_positive", (1, 0): "false_negative"}.get(
                (reference[i, j], predicted[i, j])
            )
            if kind:
                rows[kind].append({"id": report.uid, "mesh_major": list(report.mesh_major), "text": texts[i]})
        out[finding] = rows
    return out


def format_validation(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`validate_on_openi`'s result."""
    lines = [
        (
            f"{result['reports']} indexed Open-i reports, half: {result.get('half', 'all')} "
            f"({result['skipped_not_indexed']} not indexed, left out of the archive); "
            f"fields: {', '.join(result['fields'])}; uncertain counted as {result['uncertain_as']}, "
            f"probable hedges as {result.get('probable_as', 'uncertain')}"
        ),
        "",
        "| finding | MeSH positives | labeler positives | precision | recall | F1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for finding, row in result["per_finding"].items():
        lines.append(
            f"| {finding} | {row['support']} | {row['predicted']} | {row['precision']:.3f} | "
            f"{row['recall']:.3f} | {row['f1']:.3f} |"
        )
    for name in ("macro", "micro"):
        row = result[name]
        lines.append(f"| **{name}** | | | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} |")
    if result.get("common_mean_f1") is not None:
        lines += [
            "",
            (
                f"mean F1 over the 7 common findings ({', '.join(COMMON_FINDINGS)}): "
                f"**{result['common_mean_f1']:.3f}**"
            ),
        ]
    return "\n".join(lines)
