"""Cross-modal retrieval metrics: Recall@K, median rank and their chance levels.

A query's *relevant* items are given as a boolean matrix, so the same code scores the strict
setting (only the paired study) and the usual report-retrieval setting where a retrieved report
counts when its text is identical to the paired one (normal reports repeat word for word, and
identical reports cannot be told apart by any model): :func:`same_text_relevance`.

Exact-pair recall is harsh where many studies are clinically the same (most are normal), so
:func:`same_findings_precision` adds the clinical question: of the top k retrieved, how many
have exactly the query's findings (precision@k, against its chance level, the share of such
studies among the candidates), over all queries and over the queries with a finding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from math import comb

import numpy as np

DEFAULT_KS = (1, 5, 10)


def first_relevant_ranks(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of the best-scored relevant item of each query.

    Args:
        similarity: [Q, N] scores (higher = closer).
        relevant: [Q, N] bool, at least one True per row.

    Returns:
        int [Q]: ``1 +`` the number of non-relevant items scored strictly higher than the
        query's best relevant item (ties with a non-relevant item count in the query's favour).
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(
            f"similarity {similarity.shape} and relevant {relevant.shape} must be the same [Q, N] shape"
        )
    empty = np.flatnonzero(~relevant.any(axis=1))
    if len(empty):
        raise ValueError(f"{len(empty)} quer(ies) without a relevant item, e.g. row {empty[0]}")
    best_relevant = np.where(relevant, similarity, -np.inf).max(axis=1)
    return 1 + ((similarity > best_relevant[:, None]) & ~relevant).sum(axis=1)


def chance_recall_at_k(n_relevant: np.ndarray, n_items: int, k: int) -> float:
    """Mean over queries of P(a relevant item in a random top k) = ``1 - C(N-r, k) / C(N, k)``."""
    k = min(k, n_items)
    return float(np.mean([1.0 - comb(n_items - int(r), k) / comb(n_items, k) for r in n_relevant]))


def retrieval_scores(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Recall@K, median / mean rank and chance levels of one retrieval direction.

    Returns ``{"recall_at_{k}", "chance_recall_at_{k}" for k in ks, "median_rank", "mean_rank",
    "chance_mean_rank" ((N + 1) / (r + 1) averaged), "n_queries", "n_items",
    "mean_relevant_per_query"}``.
    """
    ranks = first_relevant_ranks(similarity, relevant)
    n_items = relevant.shape[1]
    n_relevant = relevant.sum(axis=1)
    scores: dict = {}
    for k in ks:
        scores[f"recall_at_{k}"] = float((ranks <= k).mean())
    for k in ks:
        scores[f"chance_recall_at_{k}"] = chance_recall_at_k(n_relevant, n_items, k)
    scores.update(
        median_rank=float(np.median(ranks)),
        mean_rank=float(ranks.mean()),
        chance_mean_rank=float(np.mean((n_items + 1) / (n_relevant + 1))),
        n_queries=int(relevant.shape[0]),
        n_items=int(n_items),
        mean_relevant_per_query=float(n_relevant.mean()),
    )
    return scores


def precision_at_k(similarity: np.ndarray, relevant: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Mean share of relevant items among each query's top k, and its chance level.

    Args:
        similarity: [Q, N] scores (higher = closer); ties broken by item order.
        relevant: [Q, N] bool.

    Returns:
        ``{"precision_at_{k}", "chance_precision_at_{k}"}`` for k in ks; chance = the mean share
        of relevant items, the expected precision of a random ranking at any k.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if similarity.shape != relevant.shape or similarity.ndim != 2:
        raise ValueError(
            f"similarity {similarity.shape} and relevant {relevant.shape} must be the same [Q, N] shape"
        )
    order = np.argsort(-similarity, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    chance = float(relevant.mean(axis=1).mean())
    scores = {}
    for k in ks:
        k_eff = min(k, relevant.shape[1])
        scores[f"precision_at_{k}"] = float(hits[:, :k_eff].mean(axis=1).mean())
        scores[f"chance_precision_at_{k}"] = chance
    return scores


def same_findings_precision(
    similarity: np.ndarray, query_labels: np.ndarray, item_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict:
    """Precision@k where an item is relevant when its finding set equals the query's.

    Args:
        similarity: [Q, N] scores.
        query_labels / item_labels: [Q, C] / [N, C] multi-hot findings (all-zero = no finding).

    Returns:
        ``{"all": {...}, "with_finding": {...}}`` from :func:`precision_at_k` (``with_finding``:
        only queries with at least one finding; omitted when there are none), each with
        ``n_queries``.
    """
    q = np.asarray(query_labels).astype(bool)
    n = np.asarray(item_labels).astype(bool)
    relevant = (q[:, None, :] == n[None, :, :]).all(axis=2)
    result = {"all": {**precision_at_k(similarity, relevant, ks), "n_queries": len(q)}}
    abnormal = q.any(axis=1)
    if abnormal.any():
        result["with_finding"] = {**precision_at_k(np.asarray(similarity)[abnormal], relevant[abnormal], ks),
                                  "n_queries": int(abnormal.sum())}  # fmt: skip
    return result


def hub_penalty(vectors: np.ndarray, bank: np.ndarray, k: int = 10) -> np.ndarray:
    """CSLS neighbourhood term: mean cosine of each vector to its ``k`` nearest bank vectors.

    Args:
        vectors: [N, P] unit-norm embeddings of one modality.
        bank: [M, P] unit-norm embeddings of the *other* modality (e.g. the training split's).

    Returns:
        float [N]; large for hubs (vectors close to many of the other modality's embeddings).
    """
    sims = np.asarray(vectors, dtype=np.float64) @ np.asarray(bank, dtype=np.float64).T
    k = max(1, min(int(k), sims.shape[1]))
    return np.sort(sims, axis=1)[:, -k:].mean(axis=1)


def csls_similarity(
    similarity: np.ndarray, row_penalty: np.ndarray, column_penalty: np.ndarray
) -> np.ndarray:
    """Cross-domain similarity local scaling (Conneau et al., arXiv 1710.04087):
    ``2 cos(x, y) - r(x) - r(y)``, which demotes hubs; [Q, N] from [Q, N], [Q], [N]."""
    return (
        2.0 * np.asarray(similarity) - np.asarray(row_penalty)[:, None] - np.asarray(column_penalty)[None, :]
    )


def normalise_report(text: str) -> str:
    """Lower case, single spaces: the form in which two reports count as the same text."""
    return re.sub(r"\s+", " ", text.strip().lower())


def same_text_relevance(query_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
    """[Q, N] bool: item j is relevant to query i when their reports are the same text."""
    keys: dict[str, int] = {}
    q = np.array([keys.setdefault(normalise_report(t), len(keys)) for t in query_texts])
    n = np.array([keys.setdefault(normalise_report(t), len(keys)) for t in item_texts])
    return q[:, None] == n[None, :]


def cross_modal_retrieval_metrics(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    reports: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    labels: np.ndarray | None = None,
    penalties: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Image->report and report->image scores over N paired studies.

    Args:
        image_embeddings: [N, P] unit-norm, row i = study i's image.
        text_embeddings: [N, P] unit-norm, row i = study i's report.
        reports: N report texts (study i's report is relevant to study i's image, and so are
            identical reports; an image is relevant to a report query when its own report is
            the same text).
        labels: optional [N, C] multi-hot findings of the studies; adds ``same_findings``
            (both directions, :func:`same_findings_precision`).
        penalties: optional (image [N], report [N]) hub penalties (:func:`hub_penalty`): the
            scores become CSLS (:func:`csls_similarity`) instead of the cosine.

    Returns:
        ``{"image_to_text": {...}, "text_to_image": {...}, "strict_pair": {...}}``, the
        first two from :func:`retrieval_scores` with same-text relevance, ``strict_pair``
        with only the paired study relevant (both directions), and ``same_findings`` if
        ``labels`` is given.
    """
    similarity = np.asarray(image_embeddings) @ np.asarray(text_embeddings).T  # [N images, N reports]
    if penalties is not None:
        similarity = csls_similarity(similarity, penalties[0], penalties[1])
    relevant = same_text_relevance(reports, reports)
    pair = np.eye(len(reports), dtype=bool)
    scores = {
        "image_to_text": retrieval_scores(similarity, relevant, ks),
        "text_to_image": retrieval_scores(similarity.T, relevant.T, ks),
        "strict_pair": {
            "image_to_text": retrieval_scores(similarity, pair, ks),
            "text_to_image": retrieval_scores(similarity.T, pair, ks),
        },
    }
    if labels is not None:
        scores["same_findings"] = {
            "image_to_text": same_findings_precision(similarity, labels, labels, ks),
            "text_to_image": same_findings_precision(similarity.T, labels, labels, ks),
        }
    return scores
