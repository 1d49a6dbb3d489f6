"""Retrieval metrics: Recall@K and MAP@R, from a query × gallery score matrix or, in bounded memory, from vectors.

Recall@K is the metric-learning convention (a query is a hit when any of its top K is a positive), not the
information-retrieval one. MAP@R is from Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020): with R
the number of positives of a query, MAP@R = (1/R) · Σ_{i≤R} P@i · rel(i); unlike Recall@1 it rewards ranking
*all* positives first. Ranks are by descending score with ties broken by gallery index, so the numbers never depend
on the sort implementation.

Both entry points rank a block of query rows at a time and keep only the top `max(max(ks), R_q)` ranks of each row
(an exact top-k selection that honours the tie order), so memory is one block, never (Q, G).
`retrieval_metrics` takes a score matrix (the matchers produce one); `vector_metrics` takes unit vectors and computes
each block's cosines on the fly, so a head's vectors are scored without any (Q, G) matrix or mask: with a 1M-article
gallery it needs the gallery vectors plus one ~100 MB block.

Every metric comes with a 95% interval, a percentile bootstrap over the queries (`bootstrap_intervals`: seeded, the
same draws on every machine; resampled a block at a time, so memory stays bounded): `recall@1_lo` / `recall@1_hi`, ...
It is the noise of WHICH queries were drawn, not of training (folds x seeds give that, `setenc.training.sweep`).

Measured on a 2-core CPU shared with other jobs (`docs/scaling.md`, `benchmarks/bench_metrics.py`): a 200k gallery,
2,000 leave-one-out queries, E = 128: 6.5 s and 255 MiB peak for `vector_metrics`, 9.5 s and 1,966 MiB for the
matrix path (64 s with the full argsort it replaced), identical metrics.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

_BLOCK = 1 << 22  # score entries ranked at once: bounds the (rows, G) buffers to a few tens of MB
BOOTSTRAP = 1000  # bootstrap resamples of the queries for every metric's interval (0 = none)
LEVEL = 0.95  # the intervals' coverage


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """Per query, 1.0 when a positive is among the first `k` ranks, else 0.0.

    Args:
        rel: (Q, G) bool, ranked: `rel[q, r]` = the gallery item at rank r is a positive of query q.
        k: the cut-off.
    """
    return rel[:, :k].any(axis=1).astype(np.float64)


def map_at_r(rel: np.ndarray, n_pos: np.ndarray | None = None) -> np.ndarray:
    """Per query, MAP@R: precision at each positive among the first R ranks, summed and divided by R.

    Args:
        rel: (Q, G) bool, ranked as in `recall_at_k`; may be truncated to the top ranks (a FAISS top-k answer)
            as long as it holds at least R of them.
        n_pos: (Q,) R, the number of positives of each query in the whole gallery; default `rel.sum(1)`.
            Queries with R = 0 get NaN.
    """
    n_pos = rel.sum(axis=1) if n_pos is None else np.asarray(n_pos)
    r_max = int(n_pos.max(initial=0))
    top = rel[:, :r_max]  # (Q, Rmax)
    ranks = np.arange(1, top.shape[1] + 1)  # (Rmax,)
    counted = top & (ranks[None, :] <= n_pos[:, None])  # positives at rank i ≤ R
    precision = np.cumsum(top, axis=1) / ranks  # (Q, Rmax) P@i
    total = (precision * counted).sum(axis=1)
    return np.divide(total, n_pos, out=np.full(len(n_pos), np.nan), where=n_pos > 0)


def top_ranks(s: np.ndarray, depth: int) -> np.ndarray:
    """(b, depth) gallery indices of each row's `depth` best scores, best first, ties by gallery index.

    Exactly the first `depth` columns of a stable argsort of `-s`, in O(G) per row instead of O(G log G): a
    partition finds each row's depth-th best value t, every entry above t is kept, and entries equal to t are kept
    lowest index first until the row holds `depth`.
    """
    b, n = s.shape
    depth = min(depth, n)
    if 2 * depth >= n:  # most of the row anyway: a full sort is as cheap
        return np.argsort(-s, axis=1, kind="stable")[:, :depth]
    t = np.partition(s, n - depth, axis=1)[:, n - depth]  # (b,) the depth-th largest value of each row
    take = s >= t[:, None]  # (b, G) at least depth per row; more only where t is tied
    extra = take.sum(axis=1) - depth
    for r in np.flatnonzero(extra):  # rows tied at t: drop the highest-index ties
        ties = np.flatnonzero(s[r] == t[r])
        take[r, ties[len(ties) - extra[r]:]] = False
    cols = np.nonzero(take)[1].reshape(b, depth)  # ascending gallery index within each row
    order = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1)


class _Tally:
    """Per-query Recall@K and MAP@R accumulated block by block (the one ranking path of both entry points)."""

    def __init__(self, ks: Sequence[int], bootstrap: int = BOOTSTRAP):
        self.ks = tuple(ks)
        self.bootstrap = bootstrap
        self.recalls: dict[int, list[np.ndarray]] = {k: [] for k in self.ks}
        self.maps: list[np.ndarray] = []
        self.n_pos: list[np.ndarray] = []

    def add(self, s: np.ndarray, pos: np.ndarray, skip: np.ndarray | None, first: int) -> None:
        """Rank one block: `s` (b, G) scores (modified), `pos` (b, G) positives, `skip` (b, G) never retrieved."""
        if not (np.isfinite(s) if skip is None else np.isfinite(s) | skip).all():
            raise ValueError(f"scores of queries {first}..{first + len(s) - 1} hold NaN or infinite values; "
                             "exclude such entries with `ignore=`")
        if skip is not None:
            s[skip] = -np.inf  # ranked after every real entry
            pos &= ~skip
        n_pos = pos.sum(axis=1)
        used = n_pos > 0
        depth = max(max(self.ks, default=1), int(n_pos.max(initial=0)))  # MAP@R reads R ranks, Recall@K K ranks
        rel = np.take_along_axis(pos[used], top_ranks(s[used], depth), axis=1)
        for k in self.ks:
            self.recalls[k].append(recall_at_k(rel, k))
        self.maps.append(map_at_r(rel, n_pos[used]))
        self.n_pos.append(n_pos)

    def result(self) -> dict:
        n_pos = np.concatenate(self.n_pos) if self.n_pos else np.zeros(0, dtype=int)
        per_query = {**{f"recall@{k}": self.recalls[k] for k in self.ks}, "map@r": self.maps}
        out = {name: _mean(parts) for name, parts in per_query.items()}
        if self.bootstrap:
            values = np.stack([np.concatenate(p) if p else np.zeros(0) for p in per_query.values()])  # (M, Q)
            lo, hi = bootstrap_intervals(values, self.bootstrap)
            for i, name in enumerate(per_query):
                out[f"{name}_lo"], out[f"{name}_hi"] = float(lo[i]), float(hi[i])
        out["queries"] = int((n_pos > 0).sum())
        out["queries_without_positive"] = int((n_pos == 0).sum())
        return out


def retrieval_metrics(
    scores: np.ndarray,
    q_labels: Sequence[Hashable],
    g_labels: Sequence[Hashable],
    ks: Sequence[int] = (1, 5, 10),
    ignore: np.ndarray | None = None,
    bootstrap: int = BOOTSTRAP,
) -> dict:
    """Recall@K and MAP@R of ranking the gallery by `scores` for every query; positives share a label.

    Queries without any positive in the gallery are skipped and counted. A `None` label is "unlabelled": it is
    never a positive of anything. The scores must be finite outside `ignore`.

    Args:
        scores: (Q, G) similarity, higher = more similar.
        q_labels: Q labels (any hashables), one per query.
        g_labels: G labels, one per gallery item.
        ks: the Recall@K cut-offs.
        ignore: (Q, G) bool, entries never retrieved nor counted (e.g. the query itself in leave-one-out).
        bootstrap: resamples for the 95% intervals (`bootstrap_intervals`); 0 = no interval keys.

    Returns:
        `{"recall@1": ..., "recall@5": ..., "recall@10": ..., "map@r": ..., "queries": n_used,
        "queries_without_positive": n}` and each metric's interval `"recall@1_lo"`, `"recall@1_hi"`, ...;
        the metrics are NaN when no query has a positive.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape != (len(q_labels), len(g_labels)):
        raise ValueError(f"scores {scores.shape} must be (len(q_labels), len(g_labels)) = "
                         f"({len(q_labels)}, {len(g_labels)})")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != scores.shape:
            raise ValueError(f"ignore {ignore.shape} must have the shape of scores {scores.shape}")
    q_codes, g_codes = _label_codes(q_labels, g_labels)
    n_q, n_g = scores.shape
    tally = _Tally(ks, bootstrap)
    rows = max(1, _BLOCK // max(n_g, 1))
    for a in range(0, n_q, rows):
        s = np.array(scores[a:a + rows], dtype=np.result_type(scores.dtype, np.float32))  # (b, G) a copy
        tally.add(s, q_codes[a:a + rows, None] == g_codes[None, :], None if ignore is None else ignore[a:a + rows], a)
    return tally.result()


def vector_metrics(
    q: np.ndarray,
    g: np.ndarray,
    q_labels: Sequence[Hashable],
    g_labels: Sequence[Hashable],
    ks: Sequence[int] = (1, 5, 10),
    exclude: np.ndarray | None = None,
    block: int = 1 << 24,
    bootstrap: int = BOOTSTRAP,
    expansion=None,
) -> dict:
    """`retrieval_metrics(q @ g.T, ...)` without the (Q, G) matrix: cosines are computed and ranked a block at a time.

    Args:
        q: (Q, E) query vectors; g: (G, E) gallery vectors (inner product = the score; unit vectors = cosine).
        exclude: (Q,) the gallery position of each query's own article (never retrieved nor counted), −1 for none:
            leave-one-out's `ignore` as one index per query (`Protocol.exclude`).
        block: score entries per block (rows × G): memory is a few times `block` × 4 bytes.
        bootstrap: as in `retrieval_metrics`.
        expansion: a `setenc.search.expansion.Expansion`: rank expanded queries against the augmented gallery,
            each query kept out of the augmentation of its own gallery (`expanded_scores`); None: plain cosines.

    Returns: as `retrieval_metrics`, with the same numbers (same ranks, same tie order).
    """
    q, g = np.asarray(q), np.asarray(g)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1] or len(q) != len(q_labels) or len(g) != len(g_labels):
        raise ValueError(f"q {q.shape} and g {g.shape} must be (len(q_labels), E) = ({len(q_labels)}, E) and "
                         f"(len(g_labels), E) = ({len(g_labels)}, E)")
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.shape != (len(q),) or (exclude >= len(g)).any():
            raise ValueError(f"exclude {exclude.shape} must hold one gallery position (or -1) per query ({len(q)})")
    q_codes, g_codes = _label_codes(q_labels, g_labels)
    dtype = np.result_type(q.dtype, g.dtype, np.float32)
    tally = _Tally(ks, bootstrap)
    rows = max(1, block // max(len(g), 1))
    if expansion is None:
        blocks = ((a, q[a:a + rows] @ g.T) for a in range(0, len(q), rows))
    else:
        from setenc.search.expansion import expanded_scores

        blocks = expanded_scores(q, g, expansion, exclude, block)
    for a, s in blocks:
        s = s.astype(dtype, copy=False)  # (b, G)
        skip = None
        if exclude is not None:
            skip = np.zeros(s.shape, dtype=bool)
            hit = np.flatnonzero(exclude[a:a + rows] >= 0)
            skip[hit, exclude[a:a + rows][hit]] = True
        tally.add(s, q_codes[a:a + rows, None] == g_codes[None, :], skip, a)
    return tally.result()


def bootstrap_intervals(values: np.ndarray, n: int = BOOTSTRAP, seed: int = 0,
                        level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean of each row of `values` (M, Q), resampling the Q queries.

    Every row is resampled with the same draws (one resample of the queries scores every metric), from a generator
    seeded with `seed`, so a report's intervals are reproducible. Resamples are drawn `_BLOCK // Q` at a time, so
    memory is a few `_BLOCK`s whatever Q and n. NaN bounds when Q = 0.
    """
    m, n_q = values.shape
    if n_q == 0 or n < 1:
        return np.full(m, np.nan), np.full(m, np.nan)
    rng = np.random.default_rng(seed)
    means = np.empty((n, m))
    rows = max(1, _BLOCK // n_q)
    for a in range(0, n, rows):
        idx = rng.integers(0, n_q, size=(min(rows, n - a), n_q))  # (b, Q) one resample a row
        for i in range(m):
            means[a:a + len(idx), i] = values[i][idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def _label_codes(q_labels: Sequence[Hashable], g_labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for labels; `None` maps to −1 on the query side and −2 on the gallery side, so never matches."""
    codes: dict = {}
    q = np.array([-1 if x is None else codes.setdefault(x, len(codes)) for x in q_labels], dtype=np.int64)
    g = np.array([-2 if x is None else codes.setdefault(x, len(codes)) for x in g_labels], dtype=np.int64)
    return q, g


def _mean(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(values.mean()) if len(values) else float("nan")
