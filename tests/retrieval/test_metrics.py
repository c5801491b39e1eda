"""Recall@K, median rank and chance levels on hand-made similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from medmodal.retrieval.metrics import (
    chance_recall_at_k,
    cross_modal_retrieval_metrics,
    first_relevant_ranks,
    retrieval_scores,
    same_text_relevance,
)

# Query 0: its item (0) is best -> rank 1. Query 1: two items above its item 1 -> rank 3.
# Query 2: one item above -> rank 2. Query 3: all three others above -> rank 4.
SIMILARITY = np.array([
    [0.9, 0.1, 0.2, 0.3],
    [0.8, 0.5, 0.7, 0.1],
    [0.1, 0.6, 0.4, 0.0],
    [0.5, 0.6, 0.7, 0.2],
])  # fmt: skip


def test_ranks_recall_and_median_rank_of_known_matrix():
    pair = np.eye(4, dtype=bool)
    assert first_relevant_ranks(SIMILARITY, pair).tolist() == [1, 3, 2, 4]
    scores = retrieval_scores(SIMILARITY, pair, ks=(1, 2, 3))
    assert scores["recall_at_1"] == 0.25
    assert scores["recall_at_2"] == 0.5
    assert scores["recall_at_3"] == 0.75
    assert scores["median_rank"] == 2.5
    assert scores["mean_rank"] == 2.5
    assert scores["chance_recall_at_1"] == pytest.approx(0.25)
    assert scores["chance_mean_rank"] == pytest.approx(2.5)  # (N + 1) / 2 for one relevant item


def test_best_of_several_relevant_items_counts_and_ties_favour_the_query():
    relevant = np.array([[False, True, False, True]])
    assert first_relevant_ranks(np.array([[0.9, 0.2, 0.5, 0.6]]), relevant).tolist() == [2]
    assert first_relevant_ranks(np.array([[0.6, 0.1, 0.2, 0.6]]), relevant).tolist() == [1]


def test_query_without_relevant_item_is_an_error():
    with pytest.raises(ValueError, match="without a relevant item"):
        first_relevant_ranks(SIMILARITY, np.zeros((4, 4), dtype=bool))


def test_chance_recall_matches_simulation():
    assert chance_recall_at_k(np.array([1]), 10, 3) == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    relevant = np.zeros((1, 20), dtype=bool)
    relevant[0, :3] = True
    hits = [(first_relevant_ranks(rng.random((1, 20)), relevant) <= 5).item() for _ in range(20000)]
    assert chance_recall_at_k(np.array([3]), 20, 5) == pytest.approx(np.mean(hits), abs=0.01)


def test_same_text_relevance_groups_identical_reports():
    reports = ["No acute process.", "Small effusion.", "no  acute PROCESS."]
    assert same_text_relevance(reports, reports).tolist() == [
        [True, False, True], [False, True, False], [True, False, True],
    ]  # fmt: skip


def test_cross_modal_metrics_on_perfect_and_reversed_embeddings():
    eye = np.eye(5, dtype=np.float32)
    reports = [f"report {i}" for i in range(5)]
    perfect = cross_modal_retrieval_metrics(eye, eye, reports, ks=(1,))
    assert perfect["image_to_text"]["recall_at_1"] == perfect["text_to_image"]["recall_at_1"] == 1.0
    assert perfect["image_to_text"]["median_rank"] == 1.0
    # Two studies share a report text: the strict pair setting cannot tell their reports apart,
    # the same-text setting counts either.
    reports[1] = reports[0]
    images = eye.copy()
    texts = eye.copy()
    texts[1] = texts[0]
    m = cross_modal_retrieval_metrics(images, texts, reports, ks=(1,))
    assert m["image_to_text"]["recall_at_1"] == 1.0
    assert m["strict_pair"]["image_to_text"]["median_rank"] == 1.0  # tie between the copies favours the query
    assert m["image_to_text"]["mean_relevant_per_query"] == pytest.approx((2 + 2 + 1 + 1 + 1) / 5)
