"""Report rows for titles: title only, and photos + title late fusion with the weight tuned off the scored articles.

For every set-vector method (mean pooling and each trained head) the photo weight `w` is tuned on the group
protocol of the tuning articles (validation, else training, else a hashed share held out of the scored ones:
`evaluation.report`), then the fused vectors `[√w·set, √(1−w)·title]` (`setenc.titles.fusion`) are scored on the held-out
articles exactly as an index of them would rank: `vector_metrics`, bounded memory. The `self` protocol gets no
title rows: both halves of an article carry the same title, so a title would find the article trivially.
ms/query counts what a query costs: its set vector, its title encoded (not read from the cache) and the ranking.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from setenc.catalogs import Catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.evaluation.metrics import vector_metrics
from setenc.evaluation.protocols import Protocol, group_protocol, result_row
from setenc.titles.fusion import Fusion, tune_weight
from setenc.titles.encoders import TextEncoder
from setenc.titles.vectors import title_vectors

TITLE_PROTOCOLS = ("group", "single")  # where a title is evidence the query did not get from its own gallery copy
TUNE_FRACTION = 0.3  # share of the scored articles (hashed ids) that tune the weight when nothing else is held out


def check_titles(catalog: Catalog) -> int:
    """The number of titled articles; none is an error that says what to do (grocery, ETH-80 have no titles)."""
    n = sum(1 for a in catalog.articles if a.title and a.title.strip())
    if not n:
        raise SetencError(f"{catalog.name}: no article has a `title`, so there is nothing to fuse; evaluate it "
                          "without --text, or add a \"title\" to the manifest's lines")
    return n


def tune_fusions(text: TextEncoder, methods: dict[str, SetEncoder], sets: list[np.ndarray], catalog: Catalog,
                 cache_root) -> dict[str, SetEncoder]:
    """Each method with its tuned title fusion, tuned on these (never scored) articles' group protocol."""
    p = group_protocol(sets, catalog)
    if p is None:
        raise SetencError(f"{catalog.name}: the {len(catalog)} tuning articles hold no group with two articles, so "
                          "the title weight cannot be tuned; evaluate more articles")
    by_id = _title_map(text, catalog, cache_root)
    tq, tg = by_id(p.q_ids), by_id(p.g_ids)
    out = {}
    for name, enc in methods.items():
        if enc.head.titles is not None:
            continue  # a learned fusion takes the title itself: its own row already uses it
        w, rows = tune_weight(enc.encode_sets(p.queries, views=p.q_views), enc.encode_sets(p.gallery, views=p.g_views),
                              tq, tg, p.q_labels, p.g_labels, p.exclude)  # a view-aware head sees its tags
        grid = {str(r["alpha"]): {k: round(float(r[k]), 4) for k in ("recall@1", "map@r")} for r in rows}
        out[name] = enc.with_fusion(Fusion(w, text, {"tuned_on": catalog.name, "queries": len(p.queries),
                                                     "grid": grid}))
    return out


def title_rows(text: TextEncoder, fused: dict[str, SetEncoder], protocols: list[Protocol], catalog: Catalog,
               cache_root) -> list[dict]:
    """Rows of the title-only method and of every fused method, on the title protocols of the scored articles."""

    by_id = _title_map(text, catalog, cache_root)
    titles = {a.id: a.title for a in catalog.articles}
    rows = []
    for p in protocols:
        if p.name not in TITLE_PROTOCOLS:
            continue
        g = by_id(p.g_ids)
        t = time.perf_counter()
        q = text.encode([titles[i] for i in p.q_ids])  # a query's title is encoded at query time
        m = vector_metrics(q, g, p.q_labels, p.g_labels, exclude=p.exclude)
        rows.append(result_row(f"title ({text.name})", p, m, time.perf_counter() - t))
        for name, enc in fused.items():
            gv = enc.fusion.combine(enc.encode_sets(p.gallery, views=p.g_views), g)  # index time
            t = time.perf_counter()
            qv = enc.encode_articles(p.queries, [titles[i] for i in p.q_ids], views=p.q_views)
            m = vector_metrics(qv, gv, p.q_labels, p.g_labels, exclude=p.exclude)
            rows.append(result_row(f"{name} + title ({text.name}, w={enc.fusion.weight:g})", p, m, time.perf_counter() - t))
    return rows


def save_fused(fused: dict[str, SetEncoder], out_dir: str | Path) -> dict[str, str]:
    """Write each fused encoder as a checkpoint (`<out>/fused/<method>.pt`) that export can index photos + titles with."""
    out = {}
    for name, enc in fused.items():
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
        out[name] = str(enc.save(Path(out_dir) / "fused" / f"{slug}-{enc.fusion.text.name}.pt"))
    return out


def _title_map(text: TextEncoder, catalog: Catalog, cache_root):
    """ids -> (n, dim) title vectors of this catalogue's articles, from the title cache (zero rows: no title)."""
    vecs = title_vectors([a.title for a in catalog.articles], text, cache_root)
    row = {a.id: i for i, a in enumerate(catalog.articles)}
    return lambda ids: vecs[[row[i] for i in ids]]
