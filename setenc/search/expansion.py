"""Neighbour expansion: each catalogue vector averaged with its nearest neighbours, each query with its best hits.

Two label-free steps of instance retrieval, applied after the head to any article vectors:
- **database-side augmentation** (DBA, Gordo et al. 2017): every catalogue article's vector becomes the weighted sum
  of itself (weight 1) and its `gallery` nearest catalogue neighbours (weight cosine^`alpha`), re-normalised. Listings
  of one product are each other's nearest neighbours, so they move towards each other and away from look-alikes;
- **α query expansion** (αQE, Radenović et al. 2018): the query's vector plus its `query` best hits among the
  augmented vectors, same weights, searched again.

Nothing is trained or stored: the augmented vectors follow from the catalogue's own vectors, so a catalogue that
changes needs nothing re-fitted. Why it is on by default: on held-out products searched among every article it lifts
R@1 and MAP@R on all four catalogues (docs/bench_heads.md, round 11). Measured honestly, a held-out query never
takes part in the augmentation of the gallery it searches (`expanded_scores`), as a new listing does not. Where an
article has no other listing of its product, its neighbours are other products and the smoothing costs some R@1 on
near-duplicates: `Expansion.parse("none")` (`--expand none`) turns it off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from setenc.plumbing.errors import SetencError


@dataclass(frozen=True)
class Expansion:
    """DBA over `gallery` neighbours, then αQE over `query` hits, weights cosine^`alpha` (0 neighbours: that step off)."""

    gallery: int = 5
    query: int = 2
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if self.gallery < 0 or self.query < 0 or not self.alpha > 0:
            raise SetencError(f"expansion {self.gallery=}, {self.query=}, {self.alpha=}: neighbour counts must be "
                              ">= 0 and alpha > 0")

    @property
    def name(self) -> str:
        """`dba5+qe2` (`+a<alpha>` when alpha is not 3): what `parse` reads back."""
        parts = [f"dba{self.gallery}"] * bool(self.gallery) + [f"qe{self.query}"] * bool(self.query)
        return "+".join(parts + ([f"a{self.alpha:g}"] if self.alpha != 3.0 else [])) or "none"

    @classmethod
    def parse(cls, spec: "str | Expansion | None") -> "Expansion | None":
        """`"dba5+qe2"`, `"dba8"`, `"qe1"`, `"dba5+qe2+a2"` -> an Expansion; `"none"` / None -> None."""
        if spec is None or isinstance(spec, Expansion):
            return spec
        if spec.strip().lower() in ("none", "off", ""):
            return None
        fields = {"dba": 0, "qe": 0, "a": 3.0}
        for part in spec.strip().lower().split("+"):
            m = re.fullmatch(r"(dba|qe|a)(\d+(?:\.\d+)?)", part)
            if m is None:
                raise SetencError(f"expansion {spec!r}: write it as dba<k>+qe<k> (e.g. dba5+qe2), dba<k>, qe<k> "
                                  "or none")
            fields[m.group(1)] = float(m.group(2)) if m.group(1) == "a" else int(float(m.group(2)))
        out = cls(fields["dba"], fields["qe"], fields["a"])
        return out if out.gallery or out.query else None

    def weights(self, sims: np.ndarray) -> np.ndarray:
        """cosine^alpha of neighbours, negatives at 0 (an opposite vector is no evidence)."""
        return np.clip(sims, 0.0, None) ** self.alpha

    def augment(self, vectors: np.ndarray, neighbours: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """(n, 1 + gallery) neighbour rows (itself first) and their cosines -> (n, E) augmented unit vectors."""
        w = self.weights(sims).astype(np.float32)
        w[:, 0] = 1.0  # itself: whatever its stored cosine to itself rounds to
        v = np.asarray(vectors[neighbours.ravel()], np.float32).reshape(*neighbours.shape, -1)  # rows only: a memmap
        return _unit(np.einsum("nk,nke->ne", w, v))

    def expand(self, q: np.ndarray, hits: np.ndarray, sims: np.ndarray) -> np.ndarray:
        """(Q, E) queries, (Q, h, E) their best hits' vectors and (Q, h) cosines -> (Q, E) expanded unit queries."""
        return _unit(q + np.einsum("qh,qhe->qe", self.weights(sims).astype(np.float32), hits))


DEFAULT_EXPANSION = Expansion()  # products (the groups a head holds out): measured in docs/bench_heads.md round 11
CLASS_EXPANSION = Expansion(0, 2)  # groups are classes: DBA cost fashion44k R@1, αQE alone lifts MAP@R (round 11)


DBA_MIN_GROUP = 3.0  # articles per product below which expansion is off: multiview (1.5) lost, cars (11.8) gained


def choose_expansion(split_by: str | None, per_group: float | None) -> Expansion | None:
    """The rule, from the catalogue's kind and its articles per group (None: unknown).

    Groups are classes (`split_by: article`): αQE only. Products with fewer than `DBA_MIN_GROUP` articles each on
    average: none (an article's neighbours are then mostly other products, and averaging with them cost multiview's
    mean pooling 0.15 R@1). Otherwise (products with several listings each, or unknown): DBA + αQE.
    """
    if split_by == "article":
        return CLASS_EXPANSION
    if per_group is not None and per_group < DBA_MIN_GROUP:
        return None
    return DEFAULT_EXPANSION


def articles_per_group(catalog) -> float | None:
    """Mean articles per group among the articles that name one; None when none does (an unlabelled catalogue)."""
    groups = [a.group for a in catalog.articles if a.group is not None]
    return len(groups) / len(set(groups)) if groups else None


def expansion_for(encoder, catalog=None) -> Expansion | None:
    """The expansion an export of `encoder` is searched with unless told otherwise (`choose_expansion`).

    None for a late fusion (its vectors' lengths say which sides an article has, which averaging would blur). The
    kind is the checkpoint's (`split_by`); articles per group are `catalog`'s (the one exported or evaluated) when it
    has groups, else the training catalogue's as the checkpoint records them.
    """
    if getattr(encoder, "fusion", None) is not None:
        return None
    per_group = articles_per_group(catalog) if catalog is not None else None
    if per_group is None:
        per_group = encoder.training_info.get("articles_per_group")
    return choose_expansion(encoder.training_info.get("split_by"), per_group)


def resolve(spec: "str | Expansion | None", encoder, catalog=None) -> Expansion | None:
    """`"auto"`: `expansion_for(encoder, catalog)`; otherwise `Expansion.parse(spec)`."""
    return expansion_for(encoder, catalog) if isinstance(spec, str) and spec == "auto" else Expansion.parse(spec)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def self_neighbours(vectors: np.ndarray, k: int, block: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Exact (N, 1 + k) nearest rows of each row among all rows, itself first, and their cosines (blocked)."""
    v = np.asarray(vectors, np.float32)
    n = len(v)
    k = min(k, n - 1)
    idx = np.empty((n, k + 1), np.int64)
    sims = np.empty((n, k + 1), np.float32)
    rows = max(1, block // max(n, 1))
    for a in range(0, n, rows):
        s = v[a:a + rows] @ v.T
        own = np.arange(a, min(a + rows, n))
        s[own - a, own] = np.inf  # itself first, whatever its rounding
        top = np.argpartition(-s, k, axis=1)[:, :k + 1] if k + 1 < n else np.tile(np.arange(n), (len(s), 1))
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        idx[a:a + rows] = np.take_along_axis(top, order, axis=1)
        sims[a:a + rows] = np.take_along_axis(s, idx[a:a + rows], axis=1)
    sims[:, 0] = 1.0
    return idx, sims


def expanded_scores(q: np.ndarray, g: np.ndarray, expansion: Expansion, exclude: np.ndarray | None = None,
                    block: int = 1 << 24) -> Iterator[tuple[int, np.ndarray]]:
    """(first query, (b, G) scores) blocks of expanded queries against the augmented gallery.

    `exclude[i]` (−1: none) is query i's own position in the gallery (leave-one-out). That article is then kept out
    of query i's gallery altogether: out of the neighbours that augment the other articles (their next neighbour
    takes its place) and out of its expansion hits, so the figure is a new listing's, not an indexed one's.
    Its own column still comes back; the caller ranks it out as before.
    """
    q, g = np.asarray(q, np.float32), np.asarray(g, np.float32)
    k = min(expansion.gallery, len(g) - 1)
    nb, sims = self_neighbours(g, k + 1) if k > 0 else (np.arange(len(g))[:, None], np.ones((len(g), 1), np.float32))
    keep = min(k + 1, nb.shape[1])
    aug = expansion.augment(g, nb[:, :keep], sims[:, :keep]) if k > 0 else g
    users = _users(nb[:, 1:keep], len(g)) if exclude is not None and k > 0 else None
    rows = max(1, block // max(len(g), 1))
    for a in range(0, len(q), rows):
        qb = q[a:a + rows]
        ex = None if exclude is None else np.asarray(exclude[a:a + rows], np.int64)
        patches = [_patch(g, nb, sims, expansion, users, int(e), keep) if users is not None and e >= 0 else None
                   for e in (ex if ex is not None else [-1] * len(qb))]
        s = _scores(qb, aug, patches)
        if expansion.query:
            if ex is not None:
                hit = np.flatnonzero(ex >= 0)
                s[hit, ex[hit]] = -np.inf
            h = min(expansion.query, max(1, len(g) - 1))
            top = np.argpartition(-s, h - 1, axis=1)[:, :h] if h < len(g) else np.tile(np.arange(len(g)), (len(s), 1))
            hits = aug[top]  # (b, h, E)
            for i, p in enumerate(patches):
                if p is not None:
                    cols, vecs = p
                    for j, c in enumerate(top[i]):
                        where = np.flatnonzero(cols == c)
                        if len(where):
                            hits[i, j] = vecs[where[0]]
            s = _scores(expansion.expand(qb, hits, np.take_along_axis(s, top, axis=1)), aug, patches)
        yield a, s


def _scores(q: np.ndarray, aug: np.ndarray, patches: list) -> np.ndarray:
    """q @ aug.T with each query's patched columns (the articles it changes the augmentation of) re-scored."""
    s = q @ aug.T
    for i, p in enumerate(patches):
        if p is not None:
            cols, vecs = p
            s[i, cols] = vecs @ q[i]
    return s


def _users(nb: np.ndarray, n: int) -> list[np.ndarray]:
    """For each gallery position e, the rows whose augmenting neighbours include e."""
    rows = np.repeat(np.arange(len(nb)), nb.shape[1])
    cols = nb.ravel()
    order = np.argsort(cols, kind="stable")
    starts = np.searchsorted(cols[order], np.arange(n + 1))
    return [rows[order[starts[e]:starts[e + 1]]] for e in range(n)]


def _patch(g: np.ndarray, nb: np.ndarray, sims: np.ndarray, expansion: Expansion, users: list[np.ndarray],
           e: int, keep: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The rows that article e augments, re-augmented without it (their spare neighbour fills in)."""
    rows = users[e]
    rows = rows[rows != e]
    if not len(rows):
        return None
    n_rows, s_rows = nb[rows], sims[rows]
    ok = n_rows != e  # one e per row (it sits in the first `keep` columns), the spare column after them
    n_rows = n_rows[ok].reshape(len(rows), -1)[:, :keep]
    s_rows = s_rows[ok].reshape(len(rows), -1)[:, :keep]
    return rows, expansion.augment(g, n_rows, s_rows)



class ExpandedSearch:
    """An export's expansion: each article's augmented vector computed on first need through the export's own index
    (`neighbours(unit vectors, k) -> (scores, rows)`, rows −1 for missing hits), then cached, so an export needs no
    extra file and a search pays only for the candidates it has not met before."""

    def __init__(self, expansion: Expansion, vectors: np.ndarray,
                 neighbours: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]):
        self.expansion, self.vectors, self.neighbours = expansion, vectors, neighbours
        self._aug = np.zeros(vectors.shape, np.float32)
        self._done = np.zeros(len(vectors), bool)

    def augmented(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), E) augmented unit vectors of export rows."""
        rows = np.asarray(rows, np.int64)
        todo = np.unique(rows[~self._done[rows]])
        if len(todo):
            k = self.expansion.gallery
            nb = np.repeat(todo[:, None], k + 1, axis=1)  # padding: the row itself, at weight 0
            sims = np.zeros(nb.shape, np.float32)
            if k:
                scores, hits = self.neighbours(_unit(np.asarray(self.vectors[todo], np.float32)), k + 1)
                for i, r in enumerate(todo):
                    ok = (hits[i] >= 0) & (hits[i] != r)  # itself is column 0 whether or not the index found it
                    found = hits[i][ok][:k]
                    nb[i, 1:1 + len(found)] = found
                    sims[i, 1:1 + len(found)] = scores[i][ok][:k]
            self._aug[todo] = self.expansion.augment(self.vectors, nb, sims)
            self._done[todo] = True
        return self._aug[rows]

    def scores(self, q: np.ndarray, rows: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        """(Q, C) scores of (Q, E) unit queries, expanded, against their candidate rows' augmented vectors (−1 rows:
        −inf). `skip[i]`: a row query i never takes as an expansion hit (itself, for an article of the export)."""
        out = np.full(rows.shape, -np.inf, np.float32)
        for i in range(len(q)):
            ok = np.flatnonzero(rows[i] >= 0)
            if not len(ok):
                continue
            aug = self.augmented(rows[i, ok])
            s = aug @ q[i]
            if self.expansion.query:
                usable = np.flatnonzero(rows[i, ok] != (-1 if skip is None else skip[i]))
                top = usable[np.argsort(-s[usable], kind="stable")[:self.expansion.query]]
                s = aug @ self.expansion.expand(q[i][None], aug[top][None], s[top][None])[0]
            out[i, ok] = s
        return out
