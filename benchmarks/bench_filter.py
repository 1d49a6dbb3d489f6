"""Benchmark: what a metadata filter (`where=`) costs a search, per index kind, at 10k and 100k synthetic articles.

`python benchmarks/bench_filter.py [--sizes 10000,100000]` prints the table and writes docs/bench_filter.md.

Articles: clustered synthetic unit vectors (1280-d, as efficientnet-lite0 set vectors; 1 cluster per 100
articles), memory-mapped from a .npy as an export's are. Metadata drawn independently of the vectors (the worst case
for an index: matching articles are spread over every cluster): `category` with 100 values (a filter keeps ~1 %)
and `tier` a/b (a filter on `a` keeps ~30 %). Each query is one article vector moved by noise (norm 0.3), searched one at a time
on one thread through `SetIndex.search` (the mask, the selector and the id lookup included), k = 10; the figure is
the median CPU ms over >= --seconds per row. Recall@10 = overlap with the exact top 10 among the matching articles.
The `numpy scan` rows are the rejected alternative: an exact NumPy scan of the matching rows gathered from the
memory-mapped vectors.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from setenc.plumbing.cli import run_main

DIM = 1280
KINDS = ("flat", "ivf", "hnsw")
FILTERS = (("none", None), ("selective (category, ~1 %)", {"category": "c7"}), ("broad (tier, ~30 %)", {"tier": "a"}))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000", help="article counts, comma-separated")
    p.add_argument("--queries", type=int, default=50, help="distinct queries cycled per row")
    p.add_argument("--seconds", type=float, default=1.0, help="time spent per row (at least 5 queries)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/bench_filter.md", help="markdown report ('' = print only)")
    return p.parse_args()


def synthetic(n: int, rng: np.random.Generator, folder: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(memory-mapped (n, DIM) unit vectors, (Q, DIM) queries, metadata columns)."""
    centers = rng.normal(size=(max(1, n // 100), DIM)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(folder / f"v{n}.npy", x)
    columns = {"category": [f"c{c}" for c in rng.integers(0, 100, n)],
               "tier": ["a" if t < 0.3 else "b" for t in rng.random(n)]}
    return np.load(folder / f"v{n}.npy", mmap_mode="r"), x, columns


def timed(fn, queries: np.ndarray, seconds: float) -> float:
    """Median CPU ms of fn(query), cycling through the queries for at least `seconds` and 5 calls."""
    fn(queries[0])
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        q = queries[len(times) % len(queries)]
        t = time.process_time()
        fn(q)
        times.append(time.process_time() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    args = parse_args()
    from setenc.search.ann import build_index
    from setenc.search.filters import Metadata
    from setenc.search.index import SetIndex

    faiss.omp_set_num_threads(1)
    load_start = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    rng = np.random.default_rng(args.seed)
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="setenc-bench-filter-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            vectors, x, columns = synthetic(n, rng, Path(tmp))
            noise = rng.normal(size=(args.queries, DIM)) * (0.3 / np.sqrt(DIM))  # norm ~0.3: a near neighbour
            queries = x[rng.choice(n, args.queries, replace=False)] + noise
            queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
            exact = queries @ x.T  # (Q, n) for recall
            metadata = Metadata(columns)
            ids = [f"a{i}" for i in range(n)]
            for kind in KINDS:
                faiss.omp_set_num_threads(2)
                t = time.perf_counter()
                index, params = build_index(vectors, kind)
                build = time.perf_counter() - t
                faiss.omp_set_num_threads(1)
                manifest = {"dim": DIM, "index": {"type": kind, "params": params}}
                idx = SetIndex(index, ids, manifest, vectors, metadata=metadata)
                for label, where in FILTERS:
                    mask = np.ones(n, bool) if where is None else metadata.mask(where, n)
                    hits = [idx.search(q, k=10, where=where) for q in queries]
                    recall = np.mean([len({idx.row(i) for i, _ in h} & set(_top(s, mask, 10))) / min(10, mask.sum())
                                      for h, s in zip(hits, exact)])
                    ms = timed(lambda q: idx.search(q, k=10, where=where), queries, args.seconds)
                    rows.append((n, kind, params, build, label, mask.mean(), ms, recall))
                    print(_row(rows[-1]), flush=True)
                del idx, index
            for label, where in FILTERS[1:]:
                sel = np.flatnonzero(metadata.mask(where, n))
                ms = timed(lambda q: _numpy_scan(vectors, sel, q, 10), queries, args.seconds)
                rows.append((n, "numpy scan", {}, 0.0, label, len(sel) / n, ms, 1.0))
                print(_row(rows[-1]), flush=True)
    load_end = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    report = _report(rows, args, load_start, load_end, time.perf_counter() - start)
    print(report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"wrote {args.out}")


def _top(scores: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    rows = np.flatnonzero(mask)
    return rows[np.argsort(-scores[rows], kind="stable")[:k]]


def _numpy_scan(vectors: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = np.asarray(vectors[rows], np.float32) @ q
    top = np.argpartition(-s, min(k, len(s) - 1))[:k]
    return rows[top[np.argsort(-s[top])]]


def _row(r) -> str:
    n, kind, params, build, label, share, ms, recall = r
    p = " ".join(f"{k}={v}" for k, v in params.items())
    return (f"| {n:,} | {kind}{' ' + p if p else ''} | {label} | {share:.3f} | {ms:.3g} | {recall:.3f} | "
            f"{build:.1f} |")


def _report(rows, args, load_start, load_end, total: float) -> str:
    lines = [
        "# Metadata filters: what `where=` costs a search",
        "",
        f"Produced by `python benchmarks/bench_filter.py --sizes {args.sizes}`, total {total / 60:.1f} min. Machine: "
        f"{platform.processor() or platform.machine()}, 2 cores shared with other jobs (load average "
        f"{' / '.join(load_start)} at start, {' / '.join(load_end)} at end: the figures are upper bounds); "
        f"faiss {faiss.__version__}.",
        "",
        __doc__.split("\n\n", 1)[1].strip(),
        "",
        "| articles | index | filter | share kept | CPU ms / query | Recall@10 vs exact filtered | build s |",
        "|---:|---|---|---:|---:|---:|---:|",
        *(_row(r) for r in rows),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_main(main)
