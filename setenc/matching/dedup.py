"""De-duplicating a catalogue (`scripts/match.py`): its articles grouped into clusters of the same product at the
checkpoint's threshold for a stated pairwise precision, and, where the catalogue has groups, how well that worked.

The clusters: the checkpoint's article vectors, candidate pairs from FAISS (`clusters.vector_edges`: range search
on a flat index, or top-k on HNSW for large catalogues), average linkage (`clusters.cluster`). The report compares,
on products the head never trained on (the checkpoint's validation or test split when the catalogue is the one it
trained on, else every article), the head with mean pooling and with the best parameter-free matcher, each
calibrated the same way (`calibration.crossfit`: fitted on half the held-out products, measured on the other half).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from setenc.catalogs import Catalog, catalog_key, split_catalog
from setenc.encoder import SetEncoder
from setenc.heads.sets import masked_mean, pad_sets
from setenc.matching.calibration import MAX_ARTICLES, crossfit
from setenc.matching.clusters import cluster, pair_counts, vector_edges
from setenc.matching.matchers import pairwise_scores, unordered_matchers
from setenc.plumbing.errors import SetencError
from setenc.search.export import encode_catalog

MAX_MATCHER_ARTICLES = 1500  # held-out articles the matchers score all pairs of (1.1M pairs)
HNSW_FROM = 50_000  # articles from which candidates come from an HNSW index's top-k instead of exact range search
HNSW_K = 64  # its neighbours a query (doubled while the k-th still reaches the threshold)


def match_catalog(encoder: SetEncoder, catalog: Catalog, out: str | os.PathLike, precision: float = 0.9,
                  method: str = "average", cache_root: str | os.PathLike | None = None, compare: bool = True,
                  progress: bool = False) -> dict:
    """Cluster `catalog`'s articles and write `out/clusters.jsonl` (+ `report.md` / `report.json` with groups),
    all at once: written into a temp folder beside `out`, then swapped in, so a crash leaves no half-written folder.

    Returns the report (also written as report.json when the catalogue has groups)."""
    cal = encoder.calibration
    if cal is None:
        raise SetencError("this checkpoint carries no calibration (trained before issue 27, or without held-out "
                          "groups): retrain it with scripts/train.py, whose runs fit one")
    t0 = time.perf_counter()
    vecs, photos, _, ids, dropped, _ = encode_catalog(encoder, catalog, cache_root, "float32", progress)
    kept = catalog.subset(ids, name=catalog.name)
    threshold = cal.threshold(precision, len(ids))
    if not np.isfinite(threshold):
        raise SetencError(f"no score threshold reaches a pairwise precision of {precision} on the checkpoint's "
                          f"held-out articles; ask for a lower --precision (its thresholds: "
                          f"{cal.thresholds(len(ids))})")
    result = cluster_vectors(vecs, threshold, method)
    probs = cal.probability(result.weakest, len(ids))
    report = {"catalog": catalog.name, "articles": len(ids), "dropped": dropped, "precision": precision,
              "threshold": threshold, "method": method, "calibration": cal.method, "fitted_on": cal.fitted_on,
              "clusters": int(result.labels.max() + 1) if len(ids) else 0,
              "seconds": round(time.perf_counter() - t0, 2), "caution": precision_caution(cal, precision)}
    groups = [a.group for a in kept.articles]
    if any(g is not None for g in groups):
        truth = [g if g is not None else f"\0{a.id}" for g, a in zip(groups, kept.articles)]
        report["whole_catalogue"] = pair_counts(result.labels, truth)
        if compare:
            sets = [photos.set(r) for r in range(len(ids))]
            report["heldout"] = heldout_comparison(encoder, catalog, kept, vecs, sets, precision, cal.products)
    _write(Path(out), ids, result, probs, report)
    return report


def precision_caution(cal, precision: float, tolerance: float = 0.05) -> str | None:
    """A line when the calibration's own check says the stated precision did not hold on products it was not fitted
    on (`crossfit`: fitted on half the held-out products, measured on the other half), else None: on fine-grained
    products (cars) a threshold from a few dozen products can miss, and the user should hear it, not find it."""
    got = (cal.crossfit or {}).get(f"{precision:g}", {}).get("pair_precision")
    if got is None:
        return None
    if not np.isfinite(got):
        return (f"caution: on the checkpoint's held-out products the threshold for precision {precision:g} fitted on "
                "one half selected no pair of the other half; the stated precision is unverified")
    if got < precision - tolerance:
        return (f"caution: on the checkpoint's held-out products the threshold for precision {precision:g} reached "
                f"{got:.3f} (fitted on one half, measured on the other); expect about that")
    return None


def cluster_vectors(vecs: np.ndarray, threshold: float, method: str = "average"):
    """Clusters of unit article vectors at `threshold`: exact range-search candidates below HNSW_FROM articles,
    an HNSW top-k above (memory: the index plus the candidate pairs, never an N x N matrix)."""
    index = None
    if len(vecs) >= HNSW_FROM:
        index = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 2 * HNSW_K
        index.add(np.ascontiguousarray(vecs, np.float32))
    edges = vector_edges(vecs, threshold, index, HNSW_K if index is not None else None)
    return cluster(edges, len(vecs), threshold, method)


def heldout_articles(encoder: SetEncoder, catalog: Catalog, kept: Catalog) -> tuple[np.ndarray, str]:
    """Rows of `kept` (the articles of `catalog` with photos) the head never trained on, and which ones in words."""
    info = encoder.training_info
    if info.get("catalog") != catalog_key(catalog):
        return np.arange(len(kept)), "every article (the checkpoint was trained on another catalogue)"
    parts = split_catalog(kept, tuple(info["split"]), by=info["split_by"], seed=info["split_seed"])
    name = next((p for p in ("val", "test") if len(parts[p]) > 1), None)
    if name is None:
        return np.zeros(0, np.int64), "none (the checkpoint trained on every article of this catalogue)"
    rows = {a: r for r, a in enumerate(kept.ids)}
    which = f"the checkpoint's {name} split (split seed {info['split_seed']})"
    return np.array([rows[a] for a in parts[name].ids]), which


def heldout_comparison(encoder: SetEncoder, catalog: Catalog, kept: Catalog, vecs: np.ndarray, sets: list[np.ndarray],
                       precision: float, products: bool, precisions: tuple[float, ...] = ()) -> dict:
    """Head vs mean pooling vs the best matcher (by cluster F1 at `precision`) on held-out products, each
    cross-fitted at `precision` and any other `precisions`."""
    precisions = (precision, *[p for p in precisions if p != precision])
    rows, which = heldout_articles(encoder, catalog, kept)
    out: dict = {"articles": which, "count": int(len(rows)), "methods": {}}
    if len(rows) > MAX_ARTICLES:
        rows = rows[:MAX_ARTICLES]
    if len(rows) < 4:
        return out
    labels = [kept.articles[r].group if kept.articles[r].group is not None else f"\0{kept.ids[r]}" for r in rows]
    ids = [kept.ids[r] for r in rows]
    x, mask = pad_sets([sets[r] for r in rows])
    mean = torch.nn.functional.normalize(masked_mean(x, mask), dim=-1).numpy()
    scores = {"head": vecs[rows] @ vecs[rows].T, "mean pooling": mean @ mean.T}
    small = rows[:MAX_MATCHER_ARTICLES]
    xs, ms = pad_sets([sets[r] for r in small])
    matcher_rows = {}
    for name in unordered_matchers():
        if name != "mean":
            S = pairwise_scores(name, xs, ms, xs, ms).numpy()
            matcher_rows[name] = crossfit(S, labels[: len(small)], ids[: len(small)], products, precisions)
    for name, S in scores.items():
        out["methods"][name] = crossfit(S, labels, ids, products, precisions)
    key = f"{precision:g}"
    usable = {n: r for n, r in matcher_rows.items() if r}
    if usable:
        best = max(usable, key=lambda n: np.nan_to_num(usable[n][key]["cluster_f1"]))
        out["methods"][f"best matcher ({best})"] = usable[best]
        out["matchers"] = {n: r[key]["cluster_f1"] for n, r in usable.items()}
    if len(small) < len(rows):
        out["matcher_articles"] = len(small)
    return out


def markdown(report: dict) -> str:
    """The report as markdown: whole catalogue, then the held-out comparison."""
    p = report["precision"]
    w = report["whole_catalogue"]
    lines = [f"# De-duplication of {report['catalog']} at pairwise precision {p:g}", "",
             f"{report['articles']} articles -> {report['clusters']} clusters ({report['method']} linkage at cosine "
             f"{report['threshold']:.4f}; calibration {report['calibration']}, fitted on {report['fitted_on']}).", "",
             "| articles | pairwise precision | recall | F1 | predicted pairs |", "|---|---|---|---|---|",
             f"| whole catalogue (training products included) | {w['precision']:.3f} | {w['recall']:.3f} | "
             f"{w['f1']:.3f} | {w['pairs']:.0f} |", ""] + ([report["caution"], ""] if report.get("caution") else [])
    h = report.get("heldout")
    if h and h["methods"]:
        lines += [f"Held-out products: {h['articles']} ({h['count']} articles). Each method's map is fitted on half "
                  "of them and measured on the other half, and the reverse (mean of the two):", "",
                  "| method | threshold | pair precision | pair recall | cluster precision | cluster recall | "
                  "cluster F1 | ECE (isotonic / Platt) |", "|---|---|---|---|---|---|---|---|"]
        for name, m in h["methods"].items():
            r = m[f"{p:g}"]
            lines.append(f"| {name} | {r['threshold']:.4f} | {r['pair_precision']:.3f} | {r['pair_recall']:.3f} | "
                         f"{r['cluster_precision']:.3f} | {r['cluster_recall']:.3f} | {r['cluster_f1']:.3f} | "
                         f"{m['ece']['isotonic']:.4f} / {m['ece']['platt']:.4f} |")
    elif h:
        lines.append(f"Held-out products: {h['articles']}: too few to compare methods.")
    return "\n".join(lines) + "\n"


def _write(out: Path, ids: list[str], result, probs: np.ndarray, report: dict) -> None:
    """Every file into a temp folder beside `out`, then swapped in (old away, new in, old deleted)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with open(tmp / "clusters.jsonl", "w") as f:
            for c, rows in enumerate(result.groups()):
                p = None if np.isnan(probs[c]) else round(float(probs[c]), 6)
                f.write(json.dumps({"cluster": c, "ids": [ids[r] for r in rows], "min_probability": p}) + "\n")
        if "whole_catalogue" in report:
            (tmp / "report.json").write_text(json.dumps(report, indent=2))
            (tmp / "report.md").write_text(markdown(report))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = out.parent / f".{out.name}.old"
    if out.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.rename(out, backup)
    os.rename(tmp, out)
    shutil.rmtree(backup, ignore_errors=True)
