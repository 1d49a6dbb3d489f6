"""Two-stage search: the set-vector index proposes candidates, a pairwise matcher re-scores their photos.

The set vector is cheap and searchable; the matchers (`setenc.matching.matchers`) look at every photo pair and are too slow
to run over a whole catalogue. Re-scoring the top `candidates` of the index with a matcher's batched form gets the
matcher's ranking at the index's cost plus `candidates` pair scores: with `candidates` = every article, the result
is exactly the exhaustive matcher ranking. The final score fuses both (`fusion.fuse`): `weight` · set-vector cosine +
(1 − `weight`) · matcher score, so `weight` = 1 is the set-vector ranking and 0 the matcher's alone.

The candidates' photo vectors come from the export (`store.PhotoStore`); exports store no view tags, so matchers
that need them (`needs_views`) are refused rather than silently falling back.
"""

from __future__ import annotations

import numpy as np
import torch

from setenc.plumbing.errors import SetencError
from setenc.matching.matchers import MATCHERS, Matcher, create_matcher, pairwise_scores
from setenc.heads.sets import pad_sets
from setenc.search.store import PhotoStore
from setenc.titles.fusion import fuse

DEFAULT_CANDIDATES = 200  # set-vector hits re-scored per query


def reranker(rerank: str | Matcher) -> Matcher:
    """The matcher a search re-scores with: a `Matcher`, or a name from the `MATCHERS` registry."""
    matcher = create_matcher(rerank) if isinstance(rerank, str) else rerank
    if not isinstance(matcher, Matcher):
        raise SetencError(f"rerank must be a matcher name ({', '.join(MATCHERS.names())}) or a Matcher, "
                          f"got {type(rerank).__name__}")
    if matcher.needs_views:
        usable = [n for n in MATCHERS.names() if not MATCHERS.get(n).needs_views]
        raise SetencError(f"matcher {matcher.name!r} needs view tags, which exports do not store; "
                          f"re-rank with one of: {', '.join(usable)}")
    return matcher


def check_weight(weight: float) -> float:
    """Refuse a fusion weight outside [0, 1] before any work."""
    if not 0.0 <= weight <= 1.0:
        raise SetencError(f"fusion weight {weight} must be in [0, 1] (1 = set-vector score only, 0 = matcher only)")
    return float(weight)


def match_rows(matcher: Matcher, query_photos: np.ndarray, store: PhotoStore, rows: np.ndarray) -> np.ndarray:
    """(C,) matcher scores of one query's `(n, D)` photo vectors against the articles `rows` of `store`."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    qx, qmask = pad_sets([query_photos])
    gx, gmask = pad_sets(store.sets(rows))
    with torch.inference_mode():
        return pairwise_scores(matcher, qx, qmask, gx, gmask)[0].numpy()


def rank(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (rows, scores), best first; ties go to the lower row, as in an exhaustive ranking."""
    order = np.lexsort((rows, -scores))[:k]
    return rows[order], scores[order]


def rerank(matcher: Matcher, query_photos: np.ndarray, store: PhotoStore, rows: np.ndarray,
           set_scores: np.ndarray, k: int, weight: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate `rows` (with their set-vector cosines) by `matcher` and return the k best, fused.

    Args:
        query_photos: (n, D) photo vectors of the query set.
        rows, set_scores: (C,) candidate article rows from the index (−1 = no hit, dropped) and their cosines.
        weight: 1 = set-vector score only, 0 = matcher only.

    Returns:
        (rows (≤ k,), scores (≤ k,) float32), best first.
    """
    keep = rows >= 0
    rows, set_scores = rows[keep], set_scores[keep]
    order = np.argsort(rows, kind="stable")  # scored in row order: the same batches as an exhaustive run
    rows, set_scores = rows[order], set_scores[order]
    matched = match_rows(matcher, query_photos, store, rows)
    fused = fuse(set_scores, matched, check_weight(weight)).astype(np.float32)
    return rank(rows, fused, k)
