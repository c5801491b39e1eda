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

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
from pathlib import Path
from typing import Literal, TypedDict, cast

import faiss
import numpy as np

from medmodal.errors import InputNotFoundError

IndexKind = Literal["flat", "ivf", "hnsw"]
KINDS = ("flat", "ivf", "hnsw")
_MIN_POINTS_PER_CELL = 39  # faiss k-means wants at least 39 training points per centroid
log = logging.getLogger(__name__)


class IndexParams(TypedDict):
    """:class:`VectorIndex` parameters (``nlist`` is None until an ``ivf`` index is built)."""

    nlist: int | None
    nprobe: int
    hnsw_m: int
    ef_search: int
    ef_construction: int


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
        self.params: IndexParams = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_search": ef_search,
                       "ef_construction": ef_construction}  # fmt: skip
        self._index: faiss.Index | None = None
        self._vectors: np.ndarray | None = None  # what was indexed, for save()

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
        self._vectors = data
        return self

    def _new_index(self, n: int) -> faiss.Index:
        p = self.params
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, p["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = p["ef_construction"]
            hnsw.hnsw.efSearch = p["ef_search"]
            return hnsw
        nlist = p["nlist"] or default_nlist(n)
        if nlist > n:
            raise ValueError(f"ivf index: nlist={nlist} cells for only {n} vectors")
        p["nlist"] = nlist
        # index_factory owns the coarse quantizer (a hand-built one must outlive the index).
        # (faiss downcasts the result to IndexIVFFlat; its stub says Index)
        ivf = cast(
            faiss.IndexIVF, faiss.index_factory(self.dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        )
        ivf.nprobe = min(p["nprobe"], nlist)
        return ivf

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
        """Write ``path`` (faiss binary), ``path.npy`` (the indexed vectors) and ``path.json``
        (kind, parameters, and a keyed hash of the faiss file, see :meth:`load`)."""
        if self._index is None or self._vectors is None:
            raise RuntimeError("nothing to save: the index is empty")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(path))
        np.save(vectors_path(path), self._vectors, allow_pickle=False)
        meta = {"dim": self.dim, "kind": self.kind, "params": self.params, "size": self.size,
                "mac": file_mac(path)}  # fmt: skip
        Path(f"{path}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index written by :meth:`save`, never trusting the files more than needed.

        The faiss binary is parsed by faiss's C++ reader, which is not hardened against crafted
        input (a forged length can allocate gigabytes), so it is read only when its keyed hash
        (:func:`file_mac`, a key private to this user) shows it was written on this machine.
        Otherwise (a run folder from someone else) the index is rebuilt from ``path.npy``, read
        with ``allow_pickle=False`` after checking its header against its size; ``ivf`` and
        ``hnsw`` rebuilds take seconds to minutes for 100k vectors.
        """
        path = Path(path)
        meta_path = Path(f"{path}.json")
        if not vectors_path(path).is_file() or not meta_path.is_file():
            raise InputNotFoundError(
                f"vector index not found: {path} (needs {vectors_path(path).name} and {meta_path.name})"
            )
        meta = read_meta(meta_path)
        vectors = read_vectors(vectors_path(path), meta["dim"])
        index = cls(meta["dim"], meta["kind"], **meta["params"])
        mac = file_mac(path) if path.is_file() else None
        if mac is not None and hmac.compare_digest(mac, str(meta.get("mac", ""))):
            index._index = faiss.read_index(str(path))
            if index._index.d != index.dim or index._index.ntotal != len(vectors):
                raise ValueError(f"{path}: holds {index._index.ntotal} vectors of width {index._index.d}, "
                                 f"{vectors_path(path).name} {vectors.shape}")  # fmt: skip
            index._vectors = vectors
            index._apply_search_params()
            return index
        log.info("%s: not written on this machine (or changed); rebuilding the index from %s",
                 path, vectors_path(path).name)  # fmt: skip
        return index.build(vectors)

    def _apply_search_params(self) -> None:
        p = self.params
        index = self._index
        assert index is not None  # called by load() right after reading the index
        if self.kind == "ivf":
            nlist = cast(int, p["nlist"])  # set by build() before save() wrote it
            faiss.extract_index_ivf(index).nprobe = min(p["nprobe"], nlist)
        elif self.kind == "hnsw":
            # (read_index downcasts to IndexHNSWFlat; its stub says Index)
            cast(faiss.IndexHNSW, index).hnsw.efSearch = p["ef_search"]


def vectors_path(path: Path) -> Path:
    return Path(f"{path}.npy")


_PARAM_LIMITS = {
    "nlist": 1 << 20,
    "nprobe": 1 << 20,
    "hnsw_m": 256,
    "ef_search": 1 << 16,
    "ef_construction": 1 << 16,
}
_MAX_DIM = 1 << 16


def read_meta(path: Path) -> dict:
    """``path.json`` of an index, checked: known kind, sane width and parameters (no huge graphs)."""
    try:
        meta = json.loads(path.read_text())
        dim, kind, params = int(meta["dim"]), meta["kind"], dict(meta["params"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a vector index description ({err})") from None
    if kind not in KINDS or not 1 <= dim <= _MAX_DIM:
        raise ValueError(f"{path}: unknown index kind {kind!r} or width {dim}")
    unknown = sorted(set(params) - set(_PARAM_LIMITS))
    if unknown:
        raise ValueError(f"{path}: unknown index parameters {unknown}")
    for name, value in params.items():
        if value is None and name == "nlist":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _PARAM_LIMITS[name]:
            raise ValueError(f"{path}: index parameter {name}={value!r} outside 1..{_PARAM_LIMITS[name]}")
    return {**meta, "dim": dim, "kind": kind, "params": params}


def read_vectors(path: Path, dim: int) -> np.ndarray:
    """A float32 [N, dim] ``.npy`` file, its header checked against the file size before reading."""
    with path.open("rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }
            if version not in read_header:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran, dtype = read_header[version](fh)  # the header only; no data read yet
        except (ValueError, EOFError, SyntaxError) as err:
            raise ValueError(f"{path}: not a .npy vector file ({err})") from None
        data_bytes = path.stat().st_size - fh.tell()
    if dtype != np.dtype("<f4") or fortran or len(shape) != 2 or shape[1] != dim:
        raise ValueError(f"{path}: expected float32 vectors [N, {dim}], got {dtype} {shape}")
    if shape[0] * dim * 4 != data_bytes:
        raise ValueError(
            f"{path}: header says {shape[0]} x {dim} vectors, the file holds {data_bytes} bytes of data"
        )
    vectors = np.load(path, allow_pickle=False)
    return as_float32_matrix(vectors, dim, str(path))


def file_mac(path: Path) -> str:
    """HMAC-SHA256 of ``path``'s bytes under this user's local key (:func:`local_key`)."""
    digest = hmac.new(local_key(), digestmod=hashlib.sha256)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_key() -> bytes:
    """A random key private to this user (``$MEDMODAL_KEY_FILE``, else ``~/.cache/medmodal/index.key``,
    mode 0600), created on first use. It never leaves the machine: files hashed with it are the
    ones this user wrote."""
    path = Path(os.environ.get("MEDMODAL_KEY_FILE") or Path.home() / ".cache" / "medmodal" / "index.key")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
        except FileExistsError:
            pass  # another process created it meanwhile
    return path.read_bytes()
