"""Which articles of a catalogue are the same product: clusters at a score threshold, from candidate pairs found by
FAISS (range search, or top-k where the index has no range search), never from the full N x N score matrix.

Two ways to turn the pairs at or above the threshold into clusters:
- `components`: connected components. One chain of look-alike pairs (a-b, b-c, c-d, ...) joins unrelated products.
- `average` (the default, measured in docs/matching.md): average linkage on the candidate graph. Two clusters merge
  while the mean score over ALL their cross pairs is at least the threshold, a pair below the candidate threshold
  counting 0, so a new member must match most of a cluster, not one of its members.
Both are exact on the candidate graph: equal to their brute-force N x N versions on it (tested).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Hashable, Sequence

import faiss
import numpy as np

from setenc.plumbing.errors import SetencError

METHODS = ("average", "components")
BLOCK = 4096  # query rows searched at once
MAX_K = 4096  # most neighbours a top-k candidate search asks for
Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # (i, j, score), i < j


@dataclass
class Clustering:
    """Cluster of each article (0..C-1, clusters in order of their first article) and, per cluster, the score
    of its weakest merge (NaN for a single article): every member joined at or above it."""

    labels: np.ndarray  # (N,) int
    weakest: np.ndarray  # (C,) float
    pairs: int = 0  # candidate pairs at or above the threshold it was built from

    def groups(self) -> list[np.ndarray]:
        """Article rows of each cluster."""
        order = np.argsort(self.labels, kind="stable")
        return np.split(order, np.flatnonzero(np.diff(self.labels[order])) + 1)


def score_edges(S: np.ndarray, threshold: float) -> Edges:
    """Pairs i < j of a dense (N, N) score matrix at or above `threshold` (small held-out sets, matcher scores)."""
    i, j = np.nonzero(np.triu(np.asarray(S) >= threshold, k=1))
    return i, j, np.asarray(S)[i, j].astype(np.float64)


def range_hits(index: faiss.Index, queries: np.ndarray, threshold: float,
               k: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (rows, scores) of every indexed vector scoring at least `threshold`, best first.

    FAISS range search where the index has it (exact on a flat index); else (or with `k`) top-k, doubling k while
    a query's k-th hit still reaches the threshold (at most MAX_K: beyond that a query's list is cut)."""
    queries = np.ascontiguousarray(queries, np.float32)
    radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))  # FAISS keeps scores > radius
    out = []
    for a in range(0, len(queries), BLOCK):
        q = queries[a : a + BLOCK]
        if k is None:
            try:
                lims, D, I = index.range_search(q, radius)
                out += [_best_first(I[lims[r] : lims[r + 1]], D[lims[r] : lims[r + 1]], threshold)
                        for r in range(len(q))]
                continue
            except RuntimeError:  # this index kind has no range search: top-k below
                pass
        out += _topk_hits(index, q, threshold, k or 64)
    return out


def _topk_hits(index: faiss.Index, q: np.ndarray, threshold: float, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    hits: list = [None] * len(q)
    todo = np.arange(len(q))
    while len(todo):
        k = min(k, index.ntotal, MAX_K)
        D, I = index.search(q[todo], k)
        full = (D[:, -1] >= threshold) & (I[:, -1] >= 0) & (k < min(index.ntotal, MAX_K))
        for r in np.flatnonzero(~full):
            hits[todo[r]] = _best_first(I[r], D[r], threshold)
        todo, k = todo[full], 2 * k
    return hits


def _best_first(rows: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    keep = (rows >= 0) & (scores >= threshold)
    rows, scores = rows[keep].astype(np.int64), scores[keep].astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    return rows[order], scores[order]


def vector_edges(vectors: np.ndarray, threshold: float, index: faiss.Index | None = None,
                 k: int | None = None) -> Edges:
    """Pairs i < j of unit vectors with cosine at least `threshold`, via FAISS (`range_hits`; a flat index is built
    when none is given). Memory: the pairs found, plus one block of hits."""
    vectors = np.asarray(vectors, np.float32)
    if index is None:
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors))
    src, dst, val = [], [], []
    for a in range(0, len(vectors), BLOCK):
        for r, (rows, scores) in enumerate(range_hits(index, vectors[a : a + BLOCK], threshold, k), start=a):
            up = rows > r
            src.append(np.full(up.sum(), r, np.int64))
            dst.append(rows[up])
            val.append(scores[up])
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    i, j, s = np.concatenate(src), np.concatenate(dst), np.concatenate(val)
    return i, j, s  # a pair found from both ends (top-k) appears once: only the lower row keeps it


def cluster(edges: Edges, n: int, threshold: float, method: str = "average") -> Clustering:
    """Clusters of `n` articles from their candidate pairs at or above the threshold.

    Args:
        edges: (i, j, score) pairs, i < j, as `vector_edges` / `score_edges` return them.
        threshold: pairs below it are dropped; average linkage merges while the mean cross score reaches it.
        method: "average" (average linkage; missing pairs count 0) or "components" (connected components).
    """
    if method not in METHODS:
        raise SetencError(f"clustering {method!r} is not one of {', '.join(METHODS)}")
    i, j, s = (np.asarray(e) for e in edges)
    keep = s >= threshold
    i, j, s = i[keep], j[keep], s[keep]
    out = _components(i, j, s, n) if method == "components" else _average(i, j, s, n, threshold)
    out.pairs = len(s)
    return out


def _components(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int) -> Clustering:
    """Union-find over the pairs, strongest first: a cluster's weakest merge is its chain's weakest link."""
    parent = np.arange(n)
    weakest = np.full(n, np.nan)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for e in np.argsort(-s, kind="stable"):
        a, b = root(int(i[e])), root(int(j[e]))
        if a != b:
            parent[b] = a
            weakest[a] = np.nanmin([weakest[a], weakest[b], s[e]])
    roots = np.array([root(x) for x in range(n)])
    return _relabel(roots, weakest)


def _average(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int, threshold: float) -> Clustering:
    """Average linkage on a sparse graph: a heap of cluster pairs by mean cross score (sum of edges / |A||B|)."""
    size = [1] * n
    links: list[dict[int, float]] = [dict() for _ in range(n)]  # cluster -> {neighbour cluster: sum of cross edges}
    for a, b, v in zip(i.tolist(), j.tolist(), s.tolist()):
        links[a][b] = links[a].get(b, 0.0) + v
        links[b][a] = links[b].get(a, 0.0) + v
    heap = [(-v, a, b) for a in range(n) for b, v in links[a].items() if a < b and v >= threshold]
    heapq.heapify(heap)
    alive = [True] * n
    member = list(range(n))  # article -> its cluster's row in `links` / `size` (grows as clusters merge)
    weakest = [np.nan] * n
    while heap:
        neg, a, b = heapq.heappop(heap)
        if not (alive[a] and alive[b]):
            continue
        c = len(size)  # the merged cluster gets a new id, so heap entries of a and b go stale
        alive[a] = alive[b] = False
        size.append(size[a] + size[b])
        alive.append(True)
        weakest.append(float(np.nanmin([weakest[a], weakest[b], -neg])))
        merged: dict[int, float] = {}
        for old in (a, b):
            for x, v in links[old].items():
                if x not in (a, b):
                    merged[x] = merged.get(x, 0.0) + v
                    del links[x][old]
            links[old] = {}
        links.append(merged)
        for x, v in merged.items():
            links[x][c] = v
            mean = v / (size[c] * size[x])
            if mean >= threshold:
                heapq.heappush(heap, (-mean, c, x) if c < x else (-mean, x, c))
        member.append(c)
        member[a] = member[b] = c
    final = np.array([_find(member, x) for x in range(n)])
    return _relabel(final, np.array(weakest))


def _find(member: list[int], x: int) -> int:
    """The live cluster an article ended in: follow the merges (each cluster points at the one it merged into)."""
    root = x
    while member[root] != root:
        root = member[root]
    while member[x] != root:  # path compression: later look-ups are one step
        member[x], x = root, member[x]
    return root


def _relabel(roots: np.ndarray, weakest: np.ndarray) -> Clustering:
    """Clusters numbered 0.. in order of their first article."""
    _, first, labels = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    labels = rank[labels]
    out = np.full(len(first), np.nan)
    out[labels] = weakest[roots]
    return Clustering(labels, out)


def pair_counts(labels: np.ndarray, truth: Sequence[Hashable]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of a clustering against true groups (every pair in one cluster is a
    predicted match), from the contingency table: no pair is enumerated."""
    truth = np.unique(np.asarray(truth, dtype=object).astype(str), return_inverse=True)[1]
    pairs = lambda counts: float((counts * (counts - 1) // 2).sum())  # noqa: E731
    _, cells = np.unique(np.stack([np.asarray(labels), truth]), axis=1, return_counts=True)
    tp, predicted, true = pairs(cells), pairs(np.bincount(labels)), pairs(np.bincount(truth))
    p, r = tp / max(predicted, 1.0), tp / max(true, 1.0)
    return {"precision": p, "recall": r, "f1": 2 * p * r / max(p + r, 1e-12), "pairs": predicted}
