"""Benchmark: Recall@K / MAP@R of vectors in bounded memory (`vector_metrics`) against ranking the (Q, G) matrix.

`python benchmarks/bench_metrics.py [--gallery 200000 --queries 2000 --dim 128 --group 5]` prints one line per path:
seconds and peak memory that numpy allocated (tracemalloc), beyond the query and gallery vectors themselves.
Synthetic data: random unit vectors, groups of `--group` consecutive articles pulled towards a shared centre, the
queries are the first articles, leave-one-out (each query is excluded from the gallery), as `group_protocol` builds.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from setenc.plumbing.cli import run_main
from setenc.evaluation.metrics import retrieval_metrics, vector_metrics


def synthetic(n_gallery: int, n_queries: int, dim: int, group: int, seed: int = 0):
    """(q, g, q_labels, g_labels, exclude): unit vectors near their group's centre; query i is gallery item i."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_gallery) // group
    centres = rng.standard_normal((labels[-1] + 1, dim), dtype=np.float32)
    g = centres[labels] + 1.5 * rng.standard_normal((n_gallery, dim), dtype=np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g[:n_queries].copy(), g, labels[:n_queries].tolist(), labels.tolist(), np.arange(n_queries)


def measure(name: str, fn) -> dict:
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{name:<8} {seconds:8.1f} s  peak {peak / 2**20:8.0f} MiB  R@1 {out['recall@1']:.4f}  "
          f"MAP@R {out['map@r']:.4f}  ({out['queries']} queries)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gallery", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--group", type=int, default=5, help="articles per group (R = group - 1 with leave-one-out)")
    p.add_argument("--paths", default="vector,matrix", help="comma-separated: vector, matrix")
    a = p.parse_args()
    q, g, ql, gl, exclude = synthetic(a.gallery, a.queries, a.dim, a.group)
    print(f"gallery {a.gallery:,} x {a.dim}, {a.queries:,} queries, groups of {a.group}, leave-one-out")
    results = {}
    for path in a.paths.split(","):
        if path == "vector":
            results[path] = measure(path, lambda: vector_metrics(q, g, ql, gl, exclude=exclude))
        elif path == "matrix":
            def matrix() -> dict:
                ignore = np.zeros((len(q), len(g)), dtype=bool)
                ignore[np.arange(len(q)), exclude] = True
                return retrieval_metrics(q @ g.T, ql, gl, ignore=ignore)
            results[path] = measure(path, matrix)
    if len(results) == 2:
        same = all(results["vector"][k] == results["matrix"][k] for k in results["vector"])
        print("identical metrics" if same else f"DIFFERENT: {results}")


if __name__ == "__main__":
    run_main(main)
