"""Build and query time of the retrieval vector index at 100,000 studies.

    .venv/bin/python benchmarks/retrieval_index.py [--n 100000] [--dim 128] [--queries 1000]

Random unit vectors stand in for study embeddings (index speed does not depend on what the
vectors mean; approximate-index recall on random data is a pessimistic case, real embeddings
cluster). For each index kind: build seconds, query milliseconds per query (batched, k=10),
and recall@10 of the approximate kinds against the exact (flat) search. Writes
``benchmarks/results/retrieval_index.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import faiss
import numpy as np

from medmodal.retrieval.index import VectorIndex


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(kind: str, items: np.ndarray, queries: np.ndarray, k: int, exact: np.ndarray | None) -> dict:
    start = time.perf_counter()
    index = VectorIndex(items.shape[1], kind).build(items)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, found = index.search(queries, k)
    query = time.perf_counter() - start
    result = {"kind": kind, "build_s": round(build, 3), "query_ms_per_query": round(1000 * query / len(queries), 4),
              "queries_per_s": round(len(queries) / query, 1), "params": index.params}  # fmt: skip
    if exact is not None:
        result[f"recall_at_{k}_vs_flat"] = float(
            np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact)])
        )
    return result, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "retrieval_index.json"))
    args = parser.parse_args()
    items, queries = unit_vectors(args.n, args.dim, 0), unit_vectors(args.queries, args.dim, 1)
    flat, exact = measure("flat", items, queries, args.k, None)
    rows = [flat] + [measure(kind, items, queries, args.k, exact)[0] for kind in ("ivf", "hnsw")]
    report = {"n_items": args.n, "dim": args.dim, "n_queries": args.queries, "k": args.k,
              "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine(), "results": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
