"""Cross-modal retrieval metrics: Recall@K, median rank and their chance levels.

A query's *relevant* items are given as a boolean matrix, so the same code scores the strict
setting (only the paired study) and the usual report-retrieval setting where a retrieved report
counts when its text is identical to the paired one (normal reports repeat word for word, and
identical reports cannot be told apart by any model): :func:`same_text_relevance`.
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
        raise ValueError(f"similarity {similarity.shape} and relevant {relevant.shape} must be the same [Q, N] shape")
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


def normalise_report(text: str) -> str:
    """Lower case, single spaces: the form in which two reports count as the same text."""
    return re.sub(r"\s+", " ", text.strip().lower())


def same_text_relevance(query_texts: Sequence[str], item_texts: Sequence[str]) -> np.ndarray:
    """[Q, N] bool: item j is relevant to query i when their reports are the same text."""
    keys = {}
    q = np.array([keys.setdefault(normalise_report(t), len(keys)) for t in query_texts])
    n = np.array([keys.setdefault(normalise_report(t), len(keys)) for t in item_texts])
    return q[:, None] == n[None, :]


def cross_modal_retrieval_metrics(
    image_embeddings: np.ndarray, text_embeddings: np.ndarray, reports: Sequence[str], ks: Sequence[int] = DEFAULT_KS
) -> dict:
    """Image->report and report->image scores over N paired studies.

    Args:
        image_embeddings: [N, P] unit-norm, row i = study i's image.
        text_embeddings: [N, P] unit-norm, row i = study i's report.
        reports: N report texts (study i's report is relevant to study i's image, and so are
            identical reports; an image is relevant to a report query when its own report is
            the same text).

    Returns:
        ``{"image_to_text": {...}, "text_to_image": {...}, "strict_pair": {...}}``, the
        first two from :func:`retrieval_scores` with same-text relevance, ``strict_pair``
        with only the paired study relevant (both directions).
    """
    similarity = np.asarray(image_embeddings) @ np.asarray(text_embeddings).T  # [N images, N reports]
    relevant = same_text_relevance(reports, reports)
    pair = np.eye(len(reports), dtype=bool)
    return {
        "image_to_text": retrieval_scores(similarity, relevant, ks),
        "text_to_image": retrieval_scores(similarity.T, relevant.T, ks),
        "strict_pair": {
            "image_to_text": retrieval_scores(similarity, pair, ks),
            "text_to_image": retrieval_scores(similarity.T, pair, ks),
        },
    }
