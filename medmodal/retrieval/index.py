"""A vector index over unit-norm embeddings (cosine = inner product), built on faiss.

Kinds:

- ``flat``: exact search (``IndexFlatIP``), the default; brute force is fast up to a few
  hundred thousand vectors of width ~128 (see ``benchmarks/retrieval_index.py``).
- ``ivf``: inverted lists (``IndexIVFFlat``, inner product) with ``nlist`` k-means cells,
  trained on the indexed vectors; ``nprobe`` cells are searched per query (approximate).
- ``hnsw``: graph index (``IndexHNSWFlat``, inner product), no training; ``ef_search``
  controls the accuracy / speed trade-off (approximate).

faiss is used rather than a numpy top-k because it gives the approximate indexes that keep
search fast at 100k+ studies, and its exact index is a tuned BLAS matmul + heap anyway.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

IndexKind = Literal["flat", "ivf", "hnsw"]
KINDS = ("flat", "ivf", "hnsw")
_MIN_POINTS_PER_CELL = 39  # faiss k-means wants at least 39 training points per centroid


def as_float32_matrix(vectors: np.ndarray, dim: int | None = None, name: str = "vectors") -> np.ndarray:
    """C-contiguous float32 [N, D] copy-free view where possible; checks the width."""
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a [N, D] matrix, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{name}: width {array.shape[1]} does not match the index width {dim}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return array


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ``4 sqrt(n)`` (faiss guideline), at most ``n / 39``, at least 1."""
    return max(1, min(int(4 * math.sqrt(n)), n // _MIN_POINTS_PER_CELL))


class VectorIndex:
    """Nearest neighbours by inner product over an [N, D] matrix (rows = items 0..N-1).

    Args:
        dim: D.
        kind: ``flat`` | ``ivf`` | ``hnsw`` (module docstring).
        nlist: IVF cells (None: :func:`default_nlist` of the data at build time).
        nprobe: IVF cells searched per query.
        hnsw_m: HNSW neighbours per node.
        ef_search / ef_construction: HNSW search / build breadth.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "flat",
        *,
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 64,
        ef_construction: int = 80,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind '{kind}'; available: {', '.join(KINDS)}")
        if dim < 1:
            raise ValueError(f"index width must be positive, got {dim}")
        self.dim = dim
        self.kind = kind
        self.params = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search,
                       "ef_construction": ef_construction}  # fmt: skip
        self._index: faiss.Index | None = None

    # -------------------------------------------------------------------- build
    def build(self, vectors: np.ndarray) -> VectorIndex:
        """Index ``vectors`` [N, D] (replacing any previous content); returns self."""
        data = as_float32_matrix(vectors, self.dim)
        if len(data) == 0:
            raise ValueError("cannot build an index over zero vectors")
        index = self._new_index(len(data))
        if not index.is_trained:
            index.train(data)
        index.add(data)
        self._index = index
        return self

    def _new_index(self, n: int) -> faiss.Index:
        p = self.params
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, p["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p["ef_construction"]
            index.hnsw.efSearch = p["ef_search"]
            return index
        nlist = p["nlist"] or default_nlist(n)
        if nlist > n:
            raise ValueError(f"ivf index: nlist={nlist} cells for only {n} vectors")
        p["nlist"] = nlist
        # index_factory owns the coarse quantizer (a hand-built one must outlive the index).
        index = faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(p["nprobe"], nlist)
        return index

    # ------------------------------------------------------------------- search
    @property
    def size(self) -> int:
        """Number of indexed vectors."""
        return 0 if self._index is None else int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` items per query.

        Args:
            queries: [Q, D].
            k: neighbours wanted (capped at the index size).

        Returns:
            (scores float32 [Q, k'], indices int64 [Q, k']) best first, ``k' = min(k, size)``;
            an approximate index may return fewer hits, padded with index -1 / score -inf.
        """
        if self._index is None:
            raise RuntimeError("the index is empty: call build() first")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        data = as_float32_matrix(queries, self.dim, "queries")
        scores, indices = self._index.search(data, min(k, self.size))
        scores = np.where(indices < 0, -np.inf, scores).astype(np.float32)
        return scores, indices.astype(np.int64)

    # -------------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """Write ``path`` (faiss binary) and ``path.json`` (kind, parameters)."""
        if self._index is None:
            raise RuntimeError("nothing to save: the index is empty")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path))
        Path(f"{path}.json").write_text(json.dumps({"dim": self.dim, "kind": self.kind, "params": self.params}))

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index written by :meth:`save`."""
        path = Path(path)
        meta_path = Path(f"{path}.json")
        if not path.is_file() or not meta_path.is_file():
            raise FileNotFoundError(f"vector index not found: {path} (and {meta_path.name})")
        meta = json.loads(meta_path.read_text())
        index = cls(meta["dim"], meta["kind"], **meta["params"])
        index._index = faiss.read_index(str(path))
        if meta["kind"] == "ivf":
            faiss.extract_index_ivf(index._index).nprobe = min(meta["params"]["nprobe"], meta["params"]["nlist"])
        elif meta["kind"] == "hnsw":
            index._index.hnsw.efSearch = meta["params"]["ef_search"]
        return index
