"""Evaluation protocols: which sets are queries, which the gallery, and what counts as a hit.

- `group`: each query article against the gallery; positives share its `group`. The catalog's `partition`
  field fixes queries and gallery when present (so positives come from another capture session, say),
  else leave-one-out over every article whose group has another member.
- `self`: each article's photos split into a disjoint query half and gallery half; find the article itself.
- `single`: the `group` protocol with one-photo queries (the seed article's n = 1 case).
Splits of photos are seeded by article id, so every method sees exactly the same queries.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from setenc.catalogs import Catalog

PROTOCOLS = ("group", "self", "single")
MEANING = {  # one line each, printed under every report's table
    "group": "each query article searches the gallery; hits are articles of the same group (product)",
    "self": "half of an article's photos search the other halves of every article; the hit is the article itself",
    "single": "group retrieval from ONE random photo of each query article (the seed article's n = 1 case)",
}


@dataclass
class Protocol:
    """Query and gallery sets with labels; `exclude[q]` is the gallery position never to retrieve for query q.

    Leave-one-out excludes one item per query (the query itself), so it is stored as one index per query (−1: none)
    rather than a (Q, G) mask, which a 1M-article catalogue could not hold; `ignore` builds the mask on demand
    for the code that ranks (Q, G) score matrices anyway (the matchers).
    """

    name: str
    queries: list[np.ndarray]
    q_labels: list[str]
    q_ids: list[str]
    gallery: list[np.ndarray]
    g_labels: list[str]
    g_ids: list[str]
    exclude: np.ndarray | None = None
    q_views: list[tuple[str, ...] | None] | None = None
    g_views: list[tuple[str, ...] | None] | None = None

    def __post_init__(self) -> None:
        if self.exclude is not None:
            self.exclude = np.asarray(self.exclude, dtype=np.int64)
            if self.exclude.shape != (len(self.queries),):
                raise ValueError(f"Protocol {self.name}: exclude {self.exclude.shape} must hold one gallery position "
                                 f"(or -1) per query ({len(self.queries)},)")

    @property
    def ignore(self) -> np.ndarray | None:
        """(Q, G) bool: `True` where a query meets itself in the gallery; None when nothing is excluded."""
        if self.exclude is None:
            return None
        mask = np.zeros((len(self.queries), len(self.gallery)), dtype=bool)
        rows = np.flatnonzero(self.exclude >= 0)
        mask[rows, self.exclude[rows]] = True
        return mask


def _rng(article_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(f"{seed}:{article_id}".encode()).digest()[:8], "big"))


def group_protocol(sets: list[np.ndarray], catalog: Catalog) -> Protocol | None:
    """Group retrieval, or None when no group has two articles."""
    arts = catalog.articles
    views = [a.views for a in arts]
    if any(a.partition for a in arts):
        q = [i for i, a in enumerate(arts) if a.partition == "query"]
        g = [i for i, a in enumerate(arts) if a.partition != "query"]
        exclude = None
    else:
        counts = Counter(a.group for a in arts if a.group is not None)
        q = [i for i, a in enumerate(arts) if a.group is not None and counts[a.group] > 1]
        g = list(range(len(arts)))
        exclude = np.array(q, dtype=np.int64)  # the gallery is every article: query i sits at position i
    if not q or not g:
        return None
    lab = [a.group if a.group is not None else f"\0{a.id}" for a in arts]
    return Protocol(
        "group",
        [sets[i] for i in q], [lab[i] for i in q], [arts[i].id for i in q],
        [sets[i] for i in g], [lab[i] for i in g], [arts[i].id for i in g],
        exclude, [views[i] for i in q], [views[i] for i in g],
    )


def self_protocol(sets: list[np.ndarray], catalog: Catalog, seed: int = 0) -> Protocol | None:
    """Find an article from a disjoint half of its own photos; None when no article has two photos."""
    qs, gs, ids, qv, gv = [], [], [], [], []
    for s, a in zip(sets, catalog.articles):
        if len(s) < 2 or len(s) != len(a.images):
            continue
        perm = _rng(a.id, seed).permutation(len(s))
        half = len(s) // 2
        qi, gi = perm[:half], perm[half:]
        qs.append(s[qi])
        gs.append(s[gi])
        ids.append(a.id)
        qv.append(tuple(a.views[k] for k in qi) if a.views else None)
        gv.append(tuple(a.views[k] for k in gi) if a.views else None)
    if not ids:
        return None
    return Protocol("self", qs, ids, ids, gs, ids, ids, None, qv, gv)


def single_protocol(sets: list[np.ndarray], catalog: Catalog, seed: int = 0) -> Protocol | None:
    """Group retrieval from one random photo of each query article."""
    p = group_protocol(sets, catalog)
    if p is None:
        return None
    arts = {a.id: a for a in catalog.articles}
    picks = [int(_rng(i, seed).integers(len(s))) for i, s in zip(p.q_ids, p.queries)]
    p.queries = [s[k : k + 1] for s, k in zip(p.queries, picks)]
    p.q_views = [(arts[i].views[k],) if arts[i].views else None for i, k in zip(p.q_ids, picks)]
    p.name = "single"
    return p


def make_protocols(sets: list[np.ndarray], catalog: Catalog, names=PROTOCOLS, seed: int = 0) -> list[Protocol]:
    """The protocols this catalog supports, in report order (group retrieval first)."""
    makers = {"group": lambda: group_protocol(sets, catalog), "self": lambda: self_protocol(sets, catalog, seed),
              "single": lambda: single_protocol(sets, catalog, seed)}
    out = [makers[n]() for n in names]
    return [p for p in out if p is not None]


def evaluate_vectors(encode, protocol: Protocol) -> dict:
    """Metrics of a set-vector method: `encode(list of (n_i, D) sets, their view tags or None, article ids) ->
    (len, E)` unit vectors (the ids find what else an article brings: its title), ranked by cosine in bounded memory
    (no (Q, G) matrix)."""
    from setenc.evaluation.metrics import vector_metrics

    p = protocol
    q, g = encode(p.queries, p.q_views, p.q_ids), encode(p.gallery, p.g_views, p.g_ids)
    return vector_metrics(q, g, protocol.q_labels, protocol.g_labels, exclude=protocol.exclude)


METRICS = ("recall@1", "recall@5", "recall@10", "map@r")  # the columns of every report row


def result_row(method: str, p: Protocol, m: dict, seconds: float, options: str | None = None) -> dict:
    """One report row: a method's metrics on a protocol, its cost per query and the gallery it searched."""
    row = {"method": method, "protocol": p.name, **{k: round(float(m[k]), 4) for k in METRICS},
           "ms_per_query": round(1000 * seconds / max(1, len(p.queries)), 3), "queries": m["queries"],
           "gallery": len(p.gallery)}
    if options:
        row["options"] = options
    return row
