"""Training pairs of photo sets and set augmentation, batched in the shared (x, mask) format of `setenc.heads.sets`.

A positive pair is two *sets* that show the same thing: (a) two disjoint random subsets of one article's
photos, (b) two articles of the same `group`, or (c) an explicit labeled pair from `pairs.csv`. Each item
also carries a label (the group, else the article) so the loss never treats two articles of one group in
the same batch as negatives of each other. With per-photo view ids (a view-aware head, `setenc.heads.views`) every
sampled set carries its photos' ids along: subsets, shuffles and dropout pick photos and their ids together.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Literal, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from setenc.catalogs import Catalog
from setenc.heads.sets import pad_ids, pad_sets

PositiveMode = Literal["auto", "subsets", "group", "pairs", "unlabelled"]


def augment(s: np.ndarray, rng: np.random.Generator, max_photos: int, dropout: float) -> np.ndarray:
    """Random order, photo dropout (each photo kept with 1-dropout, at least one) and a size cap."""
    keep = rng.permutation(len(s))
    if dropout > 0 and len(keep) > 1:
        survive = keep[rng.random(len(keep)) >= dropout]
        keep = survive if len(survive) else keep[:1]
    return s[keep[:max_photos]]


def split_photos(s: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint non-empty random subsets of a set of at least two photos (random sizes)."""
    perm = rng.permutation(len(s))
    cut = int(rng.integers(1, len(s)))
    return s[perm[:cut]], s[perm[cut:]]


class PairDataset(Dataset):
    """One positive pair per anchor article per epoch, deterministic given (seed, epoch, index).

    Args:
        sets: per-article (n_i, D) photo vectors, aligned with `catalog.articles`.
        mode: which positives to use; "auto" mixes every kind the catalog supports — another article of the
            group when there is one (that generalises across listings, sessions and viewpoints), else two
            disjoint subsets of the article itself, else an explicit pair. "unlabelled" trains as a catalogue with
            no `group` and no `pairs.csv` would, even where they exist: subset positives only and every article its
            own label (so it may push two articles of one product apart) — how much of the labelled head's gain a
            user without labels keeps is measured with it (docs/bench_heads.md, round 10).
        subset_prob: in "auto" mode, the chance of a subset pair for an article that also has group partners.
        cross_session: draw group partners from another capture session (`session` field, else `partition`)
            when the article has such partners: same-session photos are near-duplicates (same shelf, same light),
            while test positives come from other sessions (neutral on grocery: 0.926 R@1 either way).
        views: per-article `(n_i,)` view ids aligned with `sets`; items then carry the sampled photos' ids.
        titles: `(len(sets), T)` title vectors (zero rows: no title) for a learned fusion; items then carry them.
        modality_dropout: with titles, the chance a sampled set loses its title, and (separately) the chance it
            keeps only its title, so the head also learns photos-only and title-only queries.
    """

    def __init__(
        self,
        sets: Sequence[np.ndarray],
        catalog: Catalog,
        mode: PositiveMode = "auto",
        max_photos: int = 8,
        dropout: float = 0.3,
        subset_prob: float = 0.5,
        seed: int = 0,
        cross_session: bool = True,
        views: Sequence[np.ndarray] | None = None,
        titles: np.ndarray | None = None,
        modality_dropout: float = 0.0,
    ):
        self.sets, self.catalog = list(sets), catalog
        self.views = None if views is None else list(views)
        self.titles, self.modality_dropout = titles, modality_dropout
        self.mode, self.max_photos, self.dropout, self.subset_prob, self.seed = mode, max_photos, dropout, subset_prob, seed
        self.epoch = 0
        index = {a.id: i for i, a in enumerate(catalog.articles)}
        group = [None if mode == "unlabelled" else a.group for a in catalog.articles]
        by_group: dict[str, list[int]] = defaultdict(list)
        for i, g in enumerate(group):
            if g is not None:
                by_group[g].append(i)
        self.partners: list[list[int]] = [[j for j in by_group[g] if j != i] if g is not None else []
                                          for i, g in enumerate(group)]
        if cross_session:
            session = [_session(a) for a in catalog.articles]
            far = [[j for j in ps if session[j] != session[i]] for i, ps in enumerate(self.partners)]
            self.partners = [f if f and session[i] is not None else ps
                             for i, (f, ps) in enumerate(zip(far, self.partners))]
        self.pairs: list[list[int]] = [[] for _ in catalog.articles]
        for a, b in (catalog.pairs or []) if mode != "unlabelled" else []:
            if a in index and b in index:
                self.pairs[index[a]].append(index[b])
                self.pairs[index[b]].append(index[a])
        keys = [g or f"\0{a.id}" for g, a in zip(group, catalog.articles)]
        labels = {g: k for k, g in enumerate(dict.fromkeys(keys))}
        self.labels = [labels[k] for k in keys]
        self.anchors = [i for i in range(len(self.sets)) if self._kinds(i)]
        if not self.anchors:
            raise ValueError(
                f"{catalog.name}: no positive pairs to train on with mode={mode!r}: articles need a shared group, "
                "an explicit pairs.csv, or at least two photos each"
            )

    def _kinds(self, i: int) -> list[str]:
        kinds = []
        if self.mode in ("auto", "group") and self.partners[i]:
            kinds.append("group")
        if self.mode in ("auto", "pairs") and self.pairs[i]:
            kinds.append("pairs")
        if self.mode in ("auto", "subsets", "unlabelled") and len(self.sets[i]) >= 2:
            kinds.append("subsets")
        return kinds

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, k: int) -> tuple:
        """`(a, b, label)`: two (n, D) sets; with view ids or titles `(a, b, label, a_ids, b_ids, a_title, b_title)`,
        None for what is not used. A title-only side is a `(0, D)` set."""
        i = self.anchors[k]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        kinds = self._kinds(i)
        j = i
        if "subsets" in kinds and (len(kinds) == 1 or rng.random() < self.subset_prob):
            a, b = split_photos(np.arange(len(self.sets[i])), rng)  # photo positions, so ids can follow them
        else:
            pool = self.partners[i] if "group" in kinds else self.pairs[i]
            j = pool[int(rng.integers(len(pool)))]
            a, b = np.arange(len(self.sets[i])), np.arange(len(self.sets[j]))
        a, b = (augment(s, rng, self.max_photos, self.dropout) for s in (a, b))
        if self.views is None and self.titles is None:
            return self.sets[i][a], self.sets[j][b], self.labels[i]
        ta = tb = None
        if self.titles is not None:
            (a, ta), (b, tb) = (self._drop_modality(s, self.titles[n], rng) for s, n in ((a, i), (b, j)))
        ids = (None, None) if self.views is None else (self.views[i][a], self.views[j][b])
        return self.sets[i][a], self.sets[j][b], self.labels[i], *ids, ta, tb

    def _drop_modality(self, photos: np.ndarray, title: np.ndarray, rng: np.random.Generator):
        """(photo positions, title vector) of one side after modality dropout: no title, or the title alone."""
        if not title.any() or not self.modality_dropout:
            return photos, title
        r = rng.random()
        if r < self.modality_dropout:
            return photos, np.zeros_like(title)
        if r < 2 * self.modality_dropout:
            return photos[:0], title
        return photos, title


def _session(article) -> str | None:
    """The capture session of an article: its `session` field, else its query/gallery `partition`, else None."""
    return article.meta.get("session") or article.partition


def collate_pairs(items: list[tuple]):
    """Pad both sides of a batch of pairs: `(xa, ma, xb, mb, labels)`, plus `(va, vb, ta, tb)` (view ids, title
    vectors; None where items carry none) when items carry either."""
    empty_ok = len(items[0]) > 3 and items[0][5] is not None  # with titles a side may be its title alone
    xa, ma = pad_sets([it[0] for it in items], empty_ok=empty_ok)
    xb, mb = pad_sets([it[1] for it in items], empty_ok=empty_ok)
    batch = (xa, ma, xb, mb, torch.tensor([it[2] for it in items]))
    if len(items[0]) == 3:
        return batch
    extra = [None if items[0][k] is None else
             pad_ids([it[k] for it in items]) if k < 5 else torch.as_tensor(np.stack([it[k] for it in items]))
             for k in (3, 4, 5, 6)]
    return (*batch, *extra)
