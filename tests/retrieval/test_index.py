"""The faiss vector index agrees with brute-force inner-product search."""

from __future__ import annotations

import numpy as np
import pytest

from medmodal.retrieval.index import VectorIndex, default_nlist


def _unit(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data():
    return _unit(3000, 32, 0), _unit(50, 32, 1)


def _brute_force(items, queries, k):
    scores = queries @ items.T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k], np.sort(scores, axis=1)[:, ::-1][:, :k]


def test_flat_index_equals_brute_force(data):
    items, queries = data
    scores, indices = VectorIndex(32, "flat").build(items).search(queries, 10)
    expected_idx, expected_scores = _brute_force(items, queries, 10)
    assert np.array_equal(indices, expected_idx)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)


def test_ivf_searching_every_cell_is_exact_and_default_is_close(data):
    items, queries = data
    expected, _ = _brute_force(items, queries, 10)
    exhaustive = VectorIndex(32, "ivf", nlist=16, nprobe=16).build(items)
    assert np.array_equal(exhaustive.search(queries, 10)[1], expected)
    approx = VectorIndex(32, "ivf").build(items)
    found = approx.search(queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)])
    assert recall > 0.8


def test_hnsw_recall_against_brute_force(data):
    items, queries = data
    expected, _ = _brute_force(items, queries, 10)
    found = VectorIndex(32, "hnsw").build(items).search(queries, 10)[1]
    recall = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, expected)])
    assert recall > 0.9


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_saved_index_gives_the_same_results(tmp_path, data, kind):
    items, queries = data
    index = VectorIndex(32, kind).build(items)
    index.save(tmp_path / "x.faiss")
    loaded = VectorIndex.load(tmp_path / "x.faiss")
    assert loaded.kind == kind and loaded.size == len(items)
    assert np.array_equal(loaded.search(queries, 5)[1], index.search(queries, 5)[1])


def test_k_larger_than_the_index_and_bad_input():
    items = _unit(4, 8, 2)
    index = VectorIndex(8).build(items)
    _scores, indices = index.search(items[:1], 10)
    assert indices.shape == (1, 4) and indices[0, 0] == 0
    with pytest.raises(ValueError, match="width 5"):
        index.search(np.ones((1, 5)), 1)
    with pytest.raises(ValueError, match="NaN"):
        VectorIndex(8).build(np.full((3, 8), np.nan))
    with pytest.raises(ValueError, match="unknown index kind"):
        VectorIndex(8, "lsh")
    with pytest.raises(RuntimeError, match="build"):
        VectorIndex(8).search(items, 1)


def test_default_nlist_respects_training_points_per_cell():
    assert default_nlist(100_000) == int(4 * 100_000**0.5)
    assert default_nlist(100) == 2
    assert default_nlist(10) == 1
