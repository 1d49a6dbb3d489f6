"""Evaluation protocols: which sets are queries, which the gallery, and what counts as a hit.

- `group`: each query article against the gallery; positives share its `group`. The catalog's `partition`
  field fixes queries and gallery when present (so positives come from another capture session, say),
  else leave-one-out over every article whose group has another member.
- `self`: each article's photos split into a disjoint query half and gallery half; find the article itself.
- `single`: the `group` protocol with one-photo queries (the seed article's n = 1 case).
- `group-x2`, `group-all`: the `group` protocol of held-out articles in a gallery that also holds the catalogue's
  other articles (those a head trained on) as distractors — as many again as the held-out gallery, or all of them.
  This is how a head is used: a new article is searched among everything the catalogue sells, and retrieval gets
  harder as the gallery grows, which a held-out-only gallery cannot show (issue 28).
Splits of photos are seeded by article id, so every method sees exactly the same queries.
"""

from __future__ import annotations

import hashlib
from collections import Counter
import dataclasses
from dataclasses import dataclass

import numpy as np

from setenc.catalogs import Catalog, hash_bucket

PROTOCOLS = ("group", "self", "single")
GALLERY_SIZES = ("x2", "all")  # the full-gallery protocols' sizes: `group-x2`, `group-all`
EXPANDED = "+expanded"  # protocol suffix: searched with neighbour expansion, as an export is (`setenc.search.expansion`)
MEANING = {  # one line each, printed under every report's table
    "group": "each query article searches the gallery; hits are articles of the same group (product)",
    "self": "half of an article's photos search the other halves of every article; the hit is the article itself",
    "single": "group retrieval from ONE random photo of each query article (the seed article's n = 1 case)",
    "group-x2": "group retrieval of the held-out articles in their gallery plus as many of the catalogue's other "
                "(trained-on) articles as distractors",
    "group-all": "group retrieval of the held-out articles in a gallery of EVERY article of the catalogue (the "
                 "trained-on ones too): how a new article is searched in use",
    "group+expanded": "`group`, searched as an export is by default: the gallery's vectors averaged with their "
                      "nearest neighbours, the query's with its best hits (setenc.search.expansion; the query kept "
                      "out of its own gallery's averaging)",
    "group-all+expanded": "`group-all`, searched as an export is by default (neighbour expansion, as "
                          "`group+expanded`)",
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
    lab = [_label(a) for a in arts]
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


def full_gallery_protocols(p: Protocol, sets: list[np.ndarray], catalog: Catalog,
                           sizes=GALLERY_SIZES) -> list[Protocol]:
    """`p` (a held-out `group` protocol) with the catalogue's other articles added to its gallery as distractors.

    `sets` / `catalog` are those other articles (a run's training and validation splits). `x2` adds as many as
    p's gallery holds (picked by hashed id, the same on every machine), `all` adds every one; an `x2` no smaller than
    `all` is left out. Distractors keep their group: where whole products are held out (split by group) none shares
    a query's group, so they are never hits; where groups are classes (split by article) a trained article of the
    query's class is a hit, as it is in use. Queries, their labels and `exclude` are p's (distractors come after
    p's gallery, so its positions hold).
    """
    arts = catalog.articles
    order = sorted(range(len(arts)), key=lambda i: hash_bucket(arts[i].id, 0))
    counts = {"x2": min(len(p.gallery), len(arts)), "all": len(arts)}
    out = []
    for size in sizes:
        if size not in counts:
            raise ValueError(f"gallery size {size!r}: use one of {GALLERY_SIZES}")
        if (size == "x2" and counts["x2"] >= counts["all"] and "all" in sizes) or not arts:
            continue
        extra = sorted(order[:counts[size]])  # catalogue order within the pick
        views = [arts[i].views for i in extra]
        out.append(Protocol(
            f"{p.name}-{size}", p.queries, p.q_labels, p.q_ids,
            p.gallery + [sets[i] for i in extra], p.g_labels + [_label(arts[i]) for i in extra],
            p.g_ids + [arts[i].id for i in extra], p.exclude, p.q_views,
            None if p.g_views is None else p.g_views + views))
    return out


def _label(a) -> str:
    """An article's group, or a label of its own (never a positive of another article)."""
    return a.group if a.group is not None else f"\0{a.id}"


def expanded_rows(p: Protocol, methods: dict) -> list[dict]:
    """Report rows of vector methods on `p` searched as an export is, as protocol `<p.name>+expanded`.

    `methods`: name -> (`encode` as `evaluate_vectors` takes it, its `Expansion`, or None for none: no row). Each
    held-out query is kept out of its own gallery's averaging (`setenc.search.expansion.expanded_scores`).
    """
    import time

    from setenc.evaluation.metrics import vector_metrics

    rows = []
    named = dataclasses.replace(p, name=p.name + EXPANDED)
    for name, (encode, expansion) in methods.items():
        if expansion is None:
            continue  # a late fusion: searched without expansion
        g = encode(p.gallery, p.g_views, p.g_ids)  # index time, not query time
        t = time.perf_counter()
        q = encode(p.queries, p.q_views, p.q_ids)
        m = vector_metrics(q, g, p.q_labels, p.g_labels, exclude=p.exclude, expansion=expansion)
        rows.append(result_row(name, named, m, time.perf_counter() - t))
    return rows


def mean_vectors(sets: list[np.ndarray], views=None, ids=None) -> np.ndarray:
    """Mean pooling as a vector method (the `mean` matcher's vectors): unit mean of each set's photo vectors."""
    from setenc.heads.classes import photo_means
    from setenc.heads.sets import pad_sets

    return photo_means(*pad_sets(sets)).numpy()


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
    """One report row: a method's metrics with their 95% intervals (`<metric>_ci`: [lo, hi], a bootstrap over the
    queries), its cost per query and the gallery it searched."""
    row = {"method": method, "protocol": p.name, **{k: round(float(m[k]), 4) for k in METRICS},
           **{f"{k}_ci": [round(float(m[f"{k}_lo"]), 4), round(float(m[f"{k}_hi"]), 4)]
              for k in METRICS if f"{k}_lo" in m},
           "ms_per_query": round(1000 * seconds / max(1, len(p.queries)), 3), "queries": m["queries"],
           "gallery": len(p.gallery)}
    if options:
        row["options"] = options
    return row
