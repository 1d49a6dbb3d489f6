"""Tuning the matchers' `s` / `m` on validation sets — never on the articles a report scores.

One grid (`S_GRID` × `M_GRID`) for every caller (evaluation report, sweeps, the seed-article experiments); which
matchers have something to tune is the matcher's own `tunable` flag, so a new matcher needs no edit here.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np
import torch

from setenc.catalogs import Catalog, hash_bucket
from setenc.plumbing.errors import SetencError
from setenc.evaluation.metrics import retrieval_metrics
from setenc.evaluation.protocols import Protocol, make_protocols
from setenc.matching.matchers import create_matcher, list_matchers
from setenc.heads.sets import pad_sets

S_GRID = (None, 0.3, 0.4, 0.5, 0.6, 0.7)  # similarity threshold; None = count every match
M_GRID = (None, 1, 2, 3, 4)  # most matches counted; None = all


def tunable_matchers(names: Sequence[str] | None = None) -> list[str]:
    """The matchers (of `names`, default all) that have `s` / `m` to tune."""
    return [n for n in (list_matchers() if names is None else names) if create_matcher(n).tunable]


def tune_matcher(name: str, qx: torch.Tensor, qmask: torch.Tensor, gx: torch.Tensor, gmask: torch.Tensor,
                 q_labels: Sequence[Hashable], g_labels: Sequence[Hashable], s_grid: Sequence[float | None] = S_GRID,
                 m_grid: Sequence[int | None] = M_GRID, ignore: np.ndarray | None = None,
                 chunk: int = 4096) -> tuple[dict, list[dict]]:
    """Grid search of `s` and `m` by MAP@R (then Recall@1, then grid order) on validation sets.

    The matches of a pair do not depend on `s` or `m`, so they are computed once (memory Q · G · min(N, M)) and
    every grid point only re-reduces them.

    Args:
        name: a tunable matcher (`recursive`, `linear`).
        qx, qmask, gx, gmask: query and gallery sets, as in `setenc.matching.matchers.pairwise_scores`.
        q_labels, g_labels: labels for `retrieval_metrics` (same label = positive).
        s_grid, m_grid: values to try; `None` = no threshold / no limit.
        ignore: (Q, G) bool entries never retrieved (e.g. the query itself).

    Returns:
        `({"s": best_s, "m": best_m}, rows)`, a row per grid point: `{"s", "m", **retrieval_metrics}`.
    """
    probe = create_matcher(name)
    if not probe.tunable:
        raise SetencError(f"matcher {name!r} has no s / m to tune; tune one of {', '.join(tunable_matchers())}")
    sims = probe.matched_sets(qx, qmask, gx, gmask, chunk)  # (Q, G, K)
    n_q, n_g = sims.shape[:2]
    rows = []
    for s in s_grid:
        for m in m_grid:
            scores = create_matcher(name, s=s, m=m).reduce(sims.view(n_q * n_g, -1)).view(n_q, n_g)
            metrics = retrieval_metrics(scores.cpu().numpy(), q_labels, g_labels, ignore=ignore)
            rows.append({"s": s, "m": m, **metrics})
    best = max(rows, key=lambda r: (r["map@r"], r["recall@1"]))  # first best in grid order
    return {"s": best["s"], "m": best["m"]}, rows


def tune_on_protocol(p: Protocol, names: Sequence[str] | None = None) -> dict[str, dict]:
    """`{matcher: {"s", "m"}}` for every tunable matcher, by MAP@R on one validation protocol."""
    qx, qm = pad_sets(p.queries)
    gx, gm = pad_sets(p.gallery)
    return {name: tune_matcher(name, qx, qm, gx, gm, p.q_labels, p.g_labels, ignore=p.ignore)[0]
            for name in tunable_matchers(names)}


def whole_groups_up_to(sets: list[np.ndarray], catalog: Catalog,
                       max_articles: int) -> tuple[list[np.ndarray], Catalog]:
    """At most `max_articles` articles made of whole groups, picked by hashed group name: the same on every run."""
    if len(catalog) <= max_articles:
        return sets, catalog
    keys = [a.group if a.group is not None else a.id for a in catalog.articles]
    sizes = Counter(keys)
    kept, n = set(), 0
    for k in sorted(sizes, key=lambda k: hash_bucket(k, 0)):
        if n and n + sizes[k] > max_articles:
            break
        kept.add(k)
        n += sizes[k]
    idx = [i for i, k in enumerate(keys) if k in kept]
    return [sets[i] for i in idx], catalog.subset([catalog.articles[i].id for i in idx])


def tune_matchers(sets: list[np.ndarray], catalog: Catalog, max_articles: int = 400,
                  names: Sequence[str] | None = None) -> dict[str, dict]:
    """`s` / `m` of the tunable matchers by MAP@R on validation articles (group protocol, else self).

    The grid costs (queries x gallery) pairwise matchings per point, so a large tuning split (the training split
    of a run without validation) is cut to whole groups, up to `max_articles` articles.
    """
    sets, catalog = whole_groups_up_to(sets, catalog, max_articles)
    ps = make_protocols(sets, catalog, ("group", "self"))
    return tune_on_protocol(ps[0], names) if ps else {}
