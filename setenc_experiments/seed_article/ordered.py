"""Experiment 2, ordered multi-image as in the article: when both sets carry the same views, compare view with
view (main↔main, back↔back, ...) and average — and check whether knowing the view beats the unordered matchers.

Two real view-tagged sources of `multiview`:
- Luma: category retrieval (12 department paths) among the Luma products, each product reduced to its `main`,
  `alt1` and `back` photo so that the ordered score is exactly the article's average of three per-view cosines.
  Products lacking one of the three views are left out.
- ETH-80: its two articles of an object have disjoint viewpoints, so an object can never be compared with itself
  view by view. Instead each object's two articles are merged into one set (6–12 of the 41 viewpoints) and
  objects retrieve the other objects of their category (8 categories); `ordered` compares same-angle photos
  (it falls back to the unordered mean for a pair that shares no angle — their share is reported).
"""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from setenc.catalogs import Catalog, load_catalog
from setenc.matching.matchers import unordered_matchers
from setenc_experiments.seed_article.common import embedded, leave_one_out, matcher_scores, metrics
from setenc_experiments.seed_article.figures import view_table

LUMA_VIEWS = ("main", "alt1", "back")


def luma_views(sets: list[np.ndarray], cat: Catalog) -> tuple[list[np.ndarray], list[dict]]:
    """Each Luma product with all of `LUMA_VIEWS` as a (3, D) set in that order, and its id, category, title, photos."""
    out, info = [], []
    for s, a in zip(sets, cat):
        if a.meta.get("source") != "magento-luma" or a.views is None or len(s) != len(a.images):
            continue
        first = {v: k for k, v in reversed(list(enumerate(a.views)))}  # view -> its first photo
        if all(v in first for v in LUMA_VIEWS):
            rows = [first[v] for v in LUMA_VIEWS]
            out.append(s[rows])
            title = None if a.title is None else html.unescape(a.title)  # the source writes "&trade;"
            info.append({"id": a.id, "category": a.meta.get("category"), "title": title,
                         "photos": [a.images[k] for k in rows]})
    return out, info


def eth_objects(sets: list[np.ndarray], cat: Catalog) -> tuple[list[np.ndarray], list[tuple], list[str], list[str]]:
    """ETH-80 objects as the union of their two articles: (sets, view tags, object ids, categories)."""
    photos, views, category = defaultdict(list), defaultdict(list), {}
    for s, a in zip(sets, cat):
        if a.meta.get("source") != "eth80" or a.views is None or len(s) != len(a.images):
            continue
        photos[a.group].append(s)
        views[a.group].extend(a.views)
        category[a.group] = a.meta.get("category")
    ids = sorted(photos)
    return ([np.concatenate(photos[g]) for g in ids], [tuple(views[g]) for g in ids], ids,
            [category[g] for g in ids])


def ordered_views(multiview_root: str | Path, backbone, cache_root: str | Path, out: Path,
                  progress: bool = True) -> dict:
    """Run experiment 2; figures go to `out`."""
    sets, cat = embedded(load_catalog(multiview_root), backbone, cache_root, progress)
    return {"luma": _luma(sets, cat, out), "eth80": _eth(sets, cat)}


def _luma(sets, cat, out: Path) -> dict:
    vsets, info = luma_views(sets, cat)
    labels = [i["category"] for i in info]
    p = leave_one_out("luma category", vsets, [i["id"] for i in info], labels, [LUMA_VIEWS] * len(vsets))
    per_view = {v: np.stack([s[k] for s in vsets]) @ np.stack([s[k] for s in vsets]).T
                for k, v in enumerate(LUMA_VIEWS)}  # view -> (N, N) cosine of that view's photos
    rows = {f"{v}↔{v} only": metrics(per_view[v], p) for v in LUMA_VIEWS}
    ordered = matcher_scores("ordered", p)
    rows["ordered (per-view average)"] = metrics(ordered, p)
    for name in unordered_matchers():
        rows[name] = metrics(matcher_scores(name, p), p)
    average = np.mean([per_view[v] for v in LUMA_VIEWS], axis=0)
    return {"products": len(vsets), "categories": len(set(labels)), "rows": rows,
            "ordered_equals_view_average": bool(np.allclose(ordered, average, atol=1e-5)),
            "table": _table(per_view, info, ordered, out / "ordered_table.png")}


def _table(per_view: dict, info: list[dict], ordered: np.ndarray, path: Path) -> dict:
    """The first Luma product (catalogue order, not chosen by result) against its 3 best by ordered score."""
    q = 0
    s = ordered[q].copy()
    s[q] = -np.inf
    top = np.argsort(-s, kind="stable")[:3]
    cands = [{"id": info[j]["id"], "title": info[j]["title"], "category": info[j]["category"],
              "per_view": {v: float(per_view[v][q, j]) for v in LUMA_VIEWS}, "average": float(ordered[q, j]),
              "same_category": info[j]["category"] == info[q]["category"]} for j in top]
    rows = [(f"{info[q]['title']}\n{info[q]['category']}", info[q]["photos"], None, None)]
    rows += [(f"{info[j]['title']}\n{info[j]['category']}", info[j]["photos"], list(c["per_view"].values()),
              c["same_category"]) for j, c in zip(top, cands)]
    return {"target": {k: info[q][k] for k in ("id", "title", "category")}, "candidates": cands,
            "figure": view_table(LUMA_VIEWS, rows, path).name}


def _eth(sets, cat) -> dict:
    osets, oviews, ids, labels = eth_objects(sets, cat)
    p = leave_one_out("eth80 category", osets, ids, labels, oviews)
    shared = np.array([[len(set(a) & set(b)) for b in oviews] for a in oviews])  # (N, N) angles in common
    off = ~np.eye(len(ids), dtype=bool)
    rows = {"ordered (same-angle average)": metrics(matcher_scores("ordered", p), p)}
    for name in unordered_matchers():
        rows[name] = metrics(matcher_scores(name, p), p)
    return {"objects": len(ids), "categories": len(set(labels)), "rows": rows,
            "pairs_sharing_an_angle": float((shared[off] > 0).mean()),
            "mean_shared_angles": float(shared[off].mean())}
