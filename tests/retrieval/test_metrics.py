"""Recall@K, median rank and chance levels on hand-made similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from medmodal.retrieval.metrics import (
    chance_recall_at_k,
    cross_modal_retrieval_metrics,
    csls_similarity,
    first_relevant_ranks,
    hub_penalty,
    precision_at_k,
    retrieval_scores,
    same_findings_precision,
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


def test_precision_at_k_of_known_matrix_and_chance():
    relevant = np.array([
        [True, False, True, False],   # top order of row 0: items 0, 3, 2, 1 -> hits 1, 0, 1, 0
        [False, False, False, True],  # row 1: items 0, 2, 1, 3 -> hits 0, 0, 0, 1
    ])  # fmt: skip
    scores = precision_at_k(SIMILARITY[:2], relevant, ks=(1, 2, 4))
    assert scores["precision_at_1"] == pytest.approx((1 + 0) / 2)
    assert scores["precision_at_2"] == pytest.approx((0.5 + 0) / 2)
    assert scores["precision_at_4"] == pytest.approx((0.5 + 0.25) / 2)  # at k = N precision = chance
    assert scores["chance_precision_at_1"] == pytest.approx((0.5 + 0.25) / 2)


def test_random_rankings_average_to_chance_precision():
    rng = np.random.default_rng(0)
    relevant = rng.random((400, 50)) < 0.2
    relevant[:, 0] = True
    scores = precision_at_k(rng.random((400, 50)), relevant, ks=(5,))
    assert scores["precision_at_5"] == pytest.approx(scores["chance_precision_at_5"], abs=0.03)


def test_same_findings_precision_matches_on_exact_finding_sets():
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 1]])
    # query 0 (finding a) ranks study 2 (normal) first, then study 1 (finding a)
    similarity = np.array([
        [0.1, 0.5, 0.9, 0.0],
        [0.2, 0.9, 0.1, 0.0],
        [0.1, 0.2, 0.9, 0.3],
        [0.9, 0.1, 0.2, 0.3],
    ])  # fmt: skip
    m = same_findings_precision(similarity, labels, labels, ks=(1, 2))
    assert m["all"]["precision_at_1"] == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert m["with_finding"]["n_queries"] == 3
    assert m["with_finding"]["precision_at_1"] == pytest.approx((0 + 1 + 0) / 3)
    assert m["with_finding"]["precision_at_2"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert m["all"]["chance_precision_at_1"] == pytest.approx((2 / 4 + 2 / 4 + 1 / 4 + 1 / 4) / 4)
    both = cross_modal_retrieval_metrics(np.eye(4), np.eye(4), ["a", "b", "c", "d"], ks=(1,), labels=labels)
    assert both["same_findings"]["image_to_text"]["all"]["precision_at_1"] == 1.0


def test_hub_penalty_and_csls_formula():
    images = np.eye(3)
    hub = np.ones(3) / np.sqrt(3)  # equally close (0.577) to every image
    near_first = np.array([0.9, np.sqrt(1 - 0.81), 0.0])  # close to image 0 only
    reports = np.stack([hub, near_first, images[2]])
    penalty = hub_penalty(reports, images, k=3)  # mean cosine to all three images
    assert penalty == pytest.approx([np.sqrt(3) / 3, (0.9 + np.sqrt(0.19)) / 3, 1 / 3])
    assert int(np.argmax(penalty)) == 0  # the hub is penalised most
    assert hub_penalty(reports, images, k=1) == pytest.approx([np.sqrt(3) / 3, 0.9, 1.0])
    similarity = images @ reports.T
    assert csls_similarity(similarity, np.zeros(3), penalty) == pytest.approx(
        2 * similarity - penalty[None, :]
    )
    # k larger than the bank is capped at the bank size
    assert hub_penalty(reports, images[:1], k=10) == pytest.approx(reports @ images[0])


def test_csls_changes_scores_but_not_a_perfect_pairing():
    eye = np.eye(4)
    plain = cross_modal_retrieval_metrics(eye, eye, ["a", "b", "c", "d"], ks=(1,))
    csls = cross_modal_retrieval_metrics(eye, eye, ["a", "b", "c", "d"], ks=(1,),
                                         penalties=(np.full(4, 0.1), np.array([0.0, 0.2, 0.4, 0.6])))  # fmt: skip
    assert plain["image_to_text"]["recall_at_1"] == csls["image_to_text"]["recall_at_1"] == 1.0
