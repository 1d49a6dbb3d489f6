"""What the article's experiments share: embedding a catalogue, scoring a protocol, holding out validation queries.

Every experiment ranks a gallery for each query and reads metrics off the (Q, G) score matrix, so the methods —
matchers, trained heads, text, fusion — only differ in how that matrix is made.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from setenc.catalogs import Article, Catalog, split_catalog
from setenc.photos import photo_sets
from setenc.plumbing.errors import SetencError
from setenc.evaluation import report
from setenc.matching.matchers import create_matcher
from setenc.evaluation.metrics import retrieval_metrics
from setenc.evaluation.protocols import Protocol

VAL_FRACTION = 0.3  # share of the queries (by hashed article id) that tune s / m / alpha; the rest is reported


def embedded(catalog: Catalog, backbone, cache_root: str | Path,
             progress: bool = True) -> tuple[list[np.ndarray], Catalog]:
    """Per-article photo vectors (embedding only what the cache lacks) and the catalogue of articles kept."""
    sets, kept, _, _ = photo_sets(catalog, backbone, cache_root, progress=progress,
                                  wait_for_lock=1800)  # another run may be writing
    return sets, kept


def leave_one_out(name: str, sets: list[np.ndarray], ids: list[str], labels: list[Hashable],
                  views: list | None = None) -> Protocol:
    """Every article queries all the others; positives share its label."""
    return Protocol(name, sets, list(labels), list(ids), sets, list(labels), list(ids),
                    np.arange(len(sets)), views, views)


def split_queries(p: Protocol, fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[Protocol, Protocol]:
    """(validation, report) protocols: the queries split by hashed article id; both keep the whole gallery."""
    holder = Catalog([Article(i, ()) for i in dict.fromkeys(p.q_ids)], Path("."))  # split_catalog hashes ids
    val_ids = set(split_catalog(holder, (fraction, 1.0 - fraction, 0.0), "article", seed)["train"].ids)
    val = [k for k, i in enumerate(p.q_ids) if i in val_ids]
    rep = [k for k, i in enumerate(p.q_ids) if i not in val_ids]
    if not val or not rep:
        raise SetencError(f"{p.name}: {len(p.q_ids)} queries are too few to hold some out for tuning "
                          f"({len(val)} validation, {len(rep)} reported); use a larger catalogue")
    return _take(p, val, "validation"), _take(p, rep, "report")


def _take(p: Protocol, rows: list[int], part: str) -> Protocol:
    pick = lambda xs: None if xs is None else [xs[k] for k in rows]  # noqa: E731
    return replace(p, name=f"{p.name} ({part})", queries=pick(p.queries), q_labels=pick(p.q_labels),
                   q_ids=pick(p.q_ids), q_views=pick(p.q_views),
                   exclude=None if p.exclude is None else p.exclude[rows])


def matcher_scores(name: str, p: Protocol, **kw) -> np.ndarray:
    """(Q, G) scores of a matcher (`s` / `m` for recursive and linear); views are used by `ordered` only."""
    return report.matcher_scores(create_matcher(name, **kw), p)


def head_scores(encoder, p: Protocol) -> np.ndarray:
    """(Q, G) cosine of the set vectors of a trained head (`SetEncoder`)."""
    return encoder.encode_sets(p.queries) @ encoder.encode_sets(p.gallery).T


def metrics(scores: np.ndarray, p: Protocol) -> dict:
    """Recall@1/5/10 and MAP@R of these scores on this protocol, rounded for the report."""
    m = retrieval_metrics(scores, p.q_labels, p.g_labels, ignore=p.ignore)
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in m.items()}


def precision_at_k(scores: np.ndarray, q_labels: Sequence[Hashable], g_labels: Sequence[Hashable], k: int,
                   ignore: np.ndarray | None = None) -> float:
    """Mean over queries of the share of the top `k` gallery items (ties by gallery index) with the query's label.

    The article's single-image measure: of a shoe's 3 nearest shoes, how many are of its kind.
    """
    s = np.array(scores, dtype=np.float64)  # (Q, G) a copy
    if ignore is not None:
        s[np.asarray(ignore, dtype=bool)] = -np.inf
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]  # (Q, k)
    g = np.asarray(g_labels, dtype=object)
    same = g[top] == np.asarray(q_labels, dtype=object)[:, None]  # (Q, k)
    return float(same.mean())


def chance_precision(labels: Sequence[Hashable]) -> float:
    """Precision@k of a random ranking: the mean share of the other items that carry the query's label."""
    labels = list(labels)
    counts = Counter(labels)
    return float(np.mean([(counts[x] - 1) / (len(labels) - 1) for x in labels]))
