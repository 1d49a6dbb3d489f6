"""Benchmark: IVF-PQ indexes beyond RAM, built in one piece vs in parallel shards, at 100k / 1M articles.

`python benchmarks/bench_ivfpq.py [--sizes 100000,1000000] [--shards 1,2]` writes docs/bench_ivfpq.md: memory per
article, build time (train + add), Recall@10 vs exact search and CPU ms per query (one thread) of the `ivfpq`
kind of `setenc.search.ann.build_index` (its default nlist / nprobe / PQ code size), and the same figures computed for
10M articles from the largest size measured (say which).

Vectors: synthetic unit vectors of the article dimension (1280, EfficientNet-Lite0 + mean pooling), drawn around
`--clusters` random centres (a catalogue has many near-duplicate listings) and written to a memory-mapped .npy,
so the sharded build reads rows in place like an export's vectors.npy. Queries: other draws around the same
centres. Recall@10 vs exact = fraction of queries whose exact nearest article is among the index's top 10.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from setenc.search.ann import PQ_REFINE, build_index, ivf_lists, pq_codes, search_refined
from setenc.plumbing.cli import run_main

CHUNK = 65536


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="articles, comma-separated")
    p.add_argument("--shards", default="1,2", help="shard counts to build each size with, comma-separated")
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--clusters", type=int, default=20000)
    p.add_argument("--noise", type=float, default=1.0, help="per-vector noise norm relative to the centre's")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/bench_ivfpq.md", help="markdown report ('' = print only)")
    return p.parse_args()


def draw(centres: np.ndarray, n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors, each a random centre plus isotropic noise of norm ~`noise`."""
    d = centres.shape[1]
    x = centres[rng.integers(len(centres), size=n)] + rng.standard_normal((n, d), np.float32) * (noise / d ** 0.5)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(Q,) row of each query's exact nearest vector, scanning the memory-mapped rows in chunks."""
    best, arg = np.full(len(queries), -np.inf, np.float32), np.zeros(len(queries), np.int64)
    for a in range(0, len(vectors), CHUNK):
        s = queries @ np.asarray(vectors[a : a + CHUNK]).T  # (Q, chunk)
        i = s.argmax(1)
        better = s[np.arange(len(queries)), i] > best
        best[better], arg[better] = s[np.arange(len(queries)), i][better], a + i[better]
    return arg


def ms_per_query(search, queries: np.ndarray) -> float:
    """Median CPU ms of one single-query top-10 `search(q (1, E))` on one thread."""
    faiss.omp_set_num_threads(1)
    times = []
    for q in queries:
        start = time.process_time()
        search(q[None])
        times.append(time.process_time() - start)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return 1e3 * float(np.median(times))


def index_bytes(index: faiss.Index) -> int:
    with tempfile.NamedTemporaryFile(suffix=".faiss") as f:
        faiss.write_index(index, f.name)
        return os.path.getsize(f.name)


def main() -> None:
    args = parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    shard_counts = [int(s) for s in args.shards.split(",")]
    load0, start_all = os.getloadavg(), time.perf_counter()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.clusters, args.dim), np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    queries = draw(centres, args.queries, args.noise, rng).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ivfpq-") as tmp:
        path = Path(tmp) / "vectors.npy"
        vecs = np.lib.format.open_memmap(path, "w+", np.float32, (max(sizes), args.dim))
        for a in range(0, len(vecs), CHUNK):
            vecs[a : a + CHUNK] = draw(centres, min(CHUNK, len(vecs) - a), args.noise, rng)
        vecs.flush()
        del vecs
        vectors = np.load(path, mmap_mode="r")
        for size in sizes:
            view = vectors[:size]  # a row prefix of the .npy: sharded builds read it in place
            truth = exact_top1(view, queries)
            for shards in shard_counts:
                start = time.perf_counter()
                index, params = build_index(view, "ivfpq", seed=args.seed, shards=shards)
                build_s = time.perf_counter() - start
                codes = index.search(queries, 10)[1]
                refined = search_refined(index, view, queries, 10)[1]
                row = {"size": size, "shards": shards, "build_s": build_s, "bytes": index_bytes(index), **params,
                       "recall": float(np.mean([t in r for t, r in zip(truth, codes)])),
                       "ms": ms_per_query(lambda q: index.search(q, 10), queries),
                       "recall_refined": float(np.mean([t in r for t, r in zip(truth, refined)])),
                       "ms_refined": ms_per_query(lambda q: search_refined(index, view, q, 10), queries)}
                rows.append(row)
                print(f"{size:,} articles, {shards} shard(s): build {build_s:.1f}s, {row['bytes'] / size:.1f} B/article, "
                      f"Recall@10 vs exact {row['recall']:.3f} ({row['recall_refined']:.3f} refined), "
                      f"{row['ms']:.3f} ({row['ms_refined']:.3f}) CPU ms/query {params}", flush=True)
                del index
    report = markdown(args, rows, load0, os.getloadavg(), time.perf_counter() - start_all)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"wrote {args.out}")


def markdown(args, rows, load0, load1, total_s) -> str:
    cmd = ("python benchmarks/bench_ivfpq.py " + " ".join(sys.argv[1:])).strip()
    m = pq_codes(args.dim)
    lines = [
        "# IVF-PQ indexes beyond RAM: one build vs parallel shards",
        "",
        f"Produced by `{cmd}`, total {total_s / 60:.1f} min. Machine: {os.cpu_count()} cores, load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end; faiss {faiss.__version__}. Index: `ivfpq` = "
        f"`IVF<nlist>,PQ{m}` ({args.dim}-d vectors, {m} bytes of codes an article), nlist / nprobe from "
        "`ivf_lists`; quantisers trained on a sample (`IVF_TRAIN_PER_LIST` points a list). Sharded builds: "
        "`build_index(..., shards=S)` — worker processes add their row ranges to copies of the trained index, "
        "merged in row order (the same index as one build: tested).",
        "",
        f"Vectors: {args.dim}-d synthetic unit vectors around {args.clusters:,} random centres (noise {args.noise}), "
        f"memory-mapped; {args.queries} queries drawn the same way. Recall@10 vs exact = the exact nearest article is "
        "in the top 10. ms / query: median CPU time of one single-query search on one thread. Build: wall time "
        "on all cores.",
        "",
        f"Two ways to search it: the codes alone, and as `SetIndex` searches an `ivfpq` export — the top "
        f"10 × {PQ_REFINE} code hits re-scored exactly on the stored vectors, read from the memory-mapped .npy "
        "(`ann.search_refined`).",
        "",
        "| articles | shards | build s | index bytes / article | index MB | nprobe | Recall@10 vs exact: codes | "
        "refined | CPU ms / query: codes | refined |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['shards']} | {r['build_s']:.1f} | {r['bytes'] / r['size']:.1f} | "
                     f"{r['bytes'] / 2**20:,.0f} | {r['nprobe']} | {r['recall']:.3f} | {r['recall_refined']:.3f} | "
                     f"{r['ms']:.3g} | {r['ms_refined']:.3g} |")
    big = max(r["size"] for r in rows)
    base = min((r for r in rows if r["size"] == big), key=lambda r: r["build_s"])
    n = 10_000_000
    nlist, nprobe = ivf_lists(n)
    nlist0, nprobe0 = ivf_lists(big)
    scan = (n / nlist * nprobe) / (big / nlist0 * nprobe0)  # codes scanned per query, relative
    lines += [
        "",
        f"**10M articles — computed, not measured** (from the {big:,} row with {base['shards']} shard(s)): "
        f"index ≈ {(m + 8) * n / 2**30:.2f} GiB of codes and ids ({m} + 8 bytes an article) plus "
        f"{nlist * args.dim * 4 / 2**20:.0f} MB of centroids (nlist {nlist:,}); the build ≈ "
        f"{base['build_s'] * n / big / 60:.0f} min on these cores if it grows linearly with the rows (adding "
        f"dominates; the training sample grows with nlist, ×{nlist / nlist0:.1f}), divided by the machines of a "
        "sharded build; "
        f"a query scans ≈ {scan:.1f}× the codes (nprobe {nprobe}, lists {n / nlist:,.0f} long) plus "
        f"{nlist / nlist0:.1f}× the centroids: ≈ {base['ms'] * scan:.2g} CPU ms if code scanning dominates "
        f"(+ the refinement's {10 * PQ_REFINE} row reads, ≈ {base['ms_refined'] - base['ms']:.2g} ms here from the "
        "page cache; from disk, that many random reads). The vectors (vectors.npy, "
        f"{args.dim * 4 * n / 2**30:.0f} GiB at float32) stay on disk, memory-mapped.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
