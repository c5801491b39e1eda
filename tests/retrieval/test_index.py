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


# ------------------------------------------------------------- files from someone else
@pytest.fixture
def own_key(tmp_path, monkeypatch):
    """A private key file for this test (not the user's ~/.cache one)."""
    monkeypatch.setenv("MEDMODAL_KEY_FILE", str(tmp_path / "key"))


def _count_faiss_reads(monkeypatch):
    import faiss

    import medmodal.retrieval.index as index_module

    calls = []
    real = faiss.read_index

    def counting(path, *args):
        calls.append(path)
        return real(path, *args)

    monkeypatch.setattr(index_module.faiss, "read_index", counting)
    return calls


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_own_index_is_read_and_a_foreign_one_is_rebuilt_without_parsing_it(
    tmp_path, data, own_key, monkeypatch, kind
):
    items, queries = data
    index = VectorIndex(32, kind).build(items)
    index.save(tmp_path / "x.faiss")
    reads = _count_faiss_reads(monkeypatch)
    assert np.array_equal(
        VectorIndex.load(tmp_path / "x.faiss").search(queries, 5)[1], index.search(queries, 5)[1]
    )
    assert len(reads) == 1  # written here: faiss reads it

    # Someone else's run folder: the faiss file is crafted (garbage that faiss might choke on)
    (tmp_path / "x.faiss").write_bytes(b"IxFI" + b"\xff" * 64)
    rebuilt = VectorIndex.load(tmp_path / "x.faiss")
    assert len(reads) == 1  # never handed to faiss's reader
    assert rebuilt.kind == kind and rebuilt.size == len(items)
    assert np.array_equal(rebuilt.search(queries, 5)[1], index.search(queries, 5)[1])


def test_another_users_key_means_a_rebuild(tmp_path, data, monkeypatch):
    items, _ = data
    monkeypatch.setenv("MEDMODAL_KEY_FILE", str(tmp_path / "their.key"))
    VectorIndex(32).build(items).save(tmp_path / "x.faiss")
    monkeypatch.setenv("MEDMODAL_KEY_FILE", str(tmp_path / "my.key"))
    reads = _count_faiss_reads(monkeypatch)
    assert VectorIndex.load(tmp_path / "x.faiss").size == len(items)
    assert reads == []
    assert (tmp_path / "my.key").stat().st_mode & 0o077 == 0  # the key is private to its owner


def test_vector_file_header_is_checked_before_reading(tmp_path, own_key):
    VectorIndex(8).build(_unit(10, 8, 3)).save(tmp_path / "x.faiss")
    npy = tmp_path / "x.faiss.npy"
    with npy.open("wb") as fh:  # claims 320 GB, holds 320 bytes
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (10**10, 8)}
        )
        fh.write(b"\0" * 320)
    with pytest.raises(ValueError, match="header says 10000000000 x 8 vectors"):
        VectorIndex.load(tmp_path / "x.faiss")
    np.save(npy, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickled object
    with pytest.raises(ValueError, match="expected float32 vectors"):
        VectorIndex.load(tmp_path / "x.faiss")


def test_index_parameters_that_would_exhaust_memory_are_refused(tmp_path, own_key):
    import json

    VectorIndex(8, "hnsw").build(_unit(10, 8, 3)).save(tmp_path / "x.faiss")
    meta_path = tmp_path / "x.faiss.json"
    meta = json.loads(meta_path.read_text())
    meta["params"]["hnsw_m"] = 10**7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="hnsw_m"):
        VectorIndex.load(tmp_path / "x.faiss")
