"""Retrieval metrics over a query × gallery score matrix: Recall@K and MAP@R.

Recall@K is the metric-learning convention (a query is a hit when any of its top K is a positive), not the
information-retrieval one. MAP@R is from Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020): with R
the number of positives of a query, MAP@R = (1/R) · Σ_{i≤R} P@i · rel(i); unlike Recall@1 it rewards ranking
*all* positives first. Ranks are by descending score with ties broken by gallery index (a stable sort), so the
numbers never depend on the sort implementation.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

_BLOCK = 1 << 22  # score entries ranked at once: bounds the (rows, G) argsort buffers to a few tens of MB


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


def retrieval_metrics(
    scores: np.ndarray,
    q_labels: Sequence[Hashable],
    g_labels: Sequence[Hashable],
    ks: Sequence[int] = (1, 5, 10),
    ignore: np.ndarray | None = None,
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

    Returns:
        `{"recall@1": ..., "recall@5": ..., "recall@10": ..., "map@r": ..., "queries": n_used,
        "queries_without_positive": n}`; the metrics are NaN when no query has a positive.
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
    recalls = {k: [] for k in ks}
    maps, n_pos_all = [], []
    rows = max(1, _BLOCK // max(n_g, 1))
    for a in range(0, n_q, rows):
        s = np.array(scores[a:a + rows], dtype=np.result_type(scores.dtype, np.float32))  # (b, G) a copy
        pos = q_codes[a:a + rows, None] == g_codes[None, :]  # (b, G)
        skip = np.zeros(s.shape, dtype=bool) if ignore is None else ignore[a:a + rows]
        if not (np.isfinite(s) | skip).all():
            raise ValueError(f"scores of queries {a}..{a + len(s) - 1} hold NaN or infinite values; "
                             "exclude such entries with `ignore=`")
        s[skip] = -np.inf  # ranked after every real entry
        pos &= ~skip
        order = np.argsort(-s, axis=1, kind="stable")  # (b, G) best first, ties by gallery index
        rel = np.take_along_axis(pos, order, axis=1)
        n_pos = pos.sum(axis=1)
        used = n_pos > 0
        for k in ks:
            recalls[k].append(recall_at_k(rel[used], k))
        maps.append(map_at_r(rel[used], n_pos[used]))
        n_pos_all.append(n_pos)
    n_pos = np.concatenate(n_pos_all) if n_pos_all else np.zeros(0, dtype=int)
    out = {f"recall@{k}": _mean(recalls[k]) for k in ks}
    out["map@r"] = _mean(maps)
    out["queries"] = int((n_pos > 0).sum())
    out["queries_without_positive"] = int((n_pos == 0).sum())
    return out


def _label_codes(q_labels: Sequence[Hashable], g_labels: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for labels; `None` maps to −1 on the query side and −2 on the gallery side, so never matches."""
    codes: dict = {}
    q = np.array([-1 if x is None else codes.setdefault(x, len(codes)) for x in q_labels], dtype=np.int64)
    g = np.array([-2 if x is None else codes.setdefault(x, len(codes)) for x in g_labels], dtype=np.int64)
    return q, g


def _mean(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    return float(values.mean()) if len(values) else float("nan")
