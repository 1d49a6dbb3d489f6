"""Experiment 1, single images as in the article: shoes embedded by a frozen CNN, their distance matrix, the
nearest shoes of four examples, precision@3 of "same kind", and a t-SNE map coloured by kind.

The article used 315 shoes (sport / formal / casual). Here: every shoe of fashion44k's three shoe article types
(Casual, Sports, Formal Shoes — the same three kinds; heels, sandals and flip-flops are left out, as the article
had none), one photo each. "Kind" is measured twice: the `articleType` and the catalogue's own `usage` column.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from setenc.catalogs import Catalog
from setenc.evaluation.plots import embedding_map, retrieval_grid
from setenc.catalogs import from_styles_csv
from setenc_experiments.seed_article.common import chance_precision, embedded, precision_at_k
from setenc_experiments.seed_article.figures import distance_matrix

SHOE_TYPES = ("Casual Shoes", "Sports Shoes", "Formal Shoes")
K = 3  # the article shows each example's 3 nearest shoes
N_EXAMPLES = 4


def shoe_catalog(fashion_root: str | Path) -> Catalog:
    """fashion44k's shoes, read from its own `styles.csv` (so `usage` is in each article's meta)."""
    cat = from_styles_csv(fashion_root)
    return cat.subset([a.id for a in cat if a.group in SHOE_TYPES], name="fashion44k-shoes")


def single_image(fashion_root: str | Path, backbone, cache_root: str | Path, out: Path,
                 progress: bool = True) -> dict:
    """Run experiment 1; figures go to `out`. Returns the numbers and figure names."""
    sets, cat = embedded(shoe_catalog(fashion_root), backbone, cache_root, progress)
    x = np.stack([s[0] for s in sets])  # (N, D) one unit vector per shoe
    sims = x @ x.T  # (N, N) cosine
    n = len(x)
    ignore = np.eye(n, dtype=bool)
    types = [a.group for a in cat]
    usage = [a.meta.get("usage") or "unknown" for a in cat]
    identical = (sims > 1 - 1e-6) & ~ignore  # byte-identical listings (see the data README)
    same_type = np.equal.outer(np.array(types, dtype=object), np.array(types, dtype=object)) & ~ignore
    res = {
        "articles": n,
        "types": dict(Counter(types)),
        "usage": dict(Counter(usage)),
        "identical_photo_articles": int(identical.any(1).sum()),
        "precision@3": {"articleType": precision_at_k(sims, types, types, K, ignore),
                        "usage": precision_at_k(sims, usage, usage, K, ignore)},
        "chance@3": {"articleType": chance_precision(types), "usage": chance_precision(usage)},
        "precision@3_by_type": {},
        "distance": {"same type": float((1 - sims)[same_type].mean()),
                     "other type": float((1 - sims)[~same_type & ~ignore].mean())},
    }
    for t in SHOE_TYPES:
        rows = [i for i, v in enumerate(types) if v == t]
        res["precision@3_by_type"][t] = precision_at_k(sims[rows], [types[i] for i in rows], types, K, ignore[rows])
    res["figures"] = {
        "neighbours": _examples(sims, cat, types, out / "shoes_nearest.png").name,
        "tsne": embedding_map(x, types, out / "shoes_tsne.png").name,
        "distance": distance_matrix(1 - sims, types, out / "shoes_distance.png").name,
    }
    return res


def _examples(sims: np.ndarray, cat: Catalog, types: list[str], path: Path) -> Path:
    """Four example shoes (evenly spaced in catalogue order, so not chosen by result) and their 3 nearest shoes."""
    rows = []
    for q in np.linspace(0, len(cat) - 1, N_EXAMPLES).astype(int):
        s = sims[q].copy()
        s[q] = -np.inf
        top = np.argsort(-s, kind="stable")[:K]
        hits = [(f"{cat[j].id} {types[j]}", list(cat[j].images), float(s[j]), types[j] == types[q]) for j in top]
        rows.append((f"{types[q]} {cat[q].id}", list(cat[q].images), hits))
    return retrieval_grid(rows, path, max_photos=1)
