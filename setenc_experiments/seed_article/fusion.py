"""Experiment 4, the article's alternative path: add the product title. Same retrievals as experiments 1 and 2
(shoes by articleType; Luma products by department), scored by the image alone, the title alone, and both fused
as alpha · image + (1 − alpha) · text with alpha tuned on validation queries and reported on the others.

The text encoder (`setenc.titles.encoders`, TF-IDF by default) is fitted on every title of the retrieval, without labels;
TF-IDF keeps its full n-gram vectors here (`dim=None`: the report's numbers were measured so, and nothing is indexed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from setenc.catalogs import load_catalog
from setenc.evaluation.protocols import Protocol
from setenc.titles.fusion import fuse, tune_alpha
from setenc.titles.encoders import create_text_encoder
from setenc_experiments.seed_article.common import embedded, leave_one_out, matcher_scores, metrics, precision_at_k, split_queries
from setenc_experiments.seed_article.ordered import LUMA_VIEWS, luma_views
from setenc_experiments.seed_article.single import K, shoe_catalog


def compare(image: np.ndarray, titles: list[str], p: Protocol, encoder: str = "tfidf") -> dict:
    """Image-only vs text-only vs fused on the report queries; alpha tuned on the validation queries.

    Args:
        image: (N, N) image scores of a leave-one-out protocol `p` over N articles with these titles.
    """
    t = create_text_encoder(encoder, **({"dim": None} if encoder == "tfidf" else {})).fit(titles).encode(titles)
    text = t @ t.T  # (N, N)
    val, rep = split_queries(p)
    rows_of = {i: k for k, i in enumerate(p.q_ids)}
    vq, rq = [rows_of[i] for i in val.q_ids], [rows_of[i] for i in rep.q_ids]
    alpha, _ = tune_alpha(image[vq], text[vq], val.q_labels, val.g_labels, val.ignore)
    out = {}
    for name, s in (("image", image), ("text", text), (f"fused (alpha={alpha})", fuse(image, text, alpha))):
        out[name] = {**metrics(s[rq], rep), "precision@3": round(precision_at_k(s[rq], rep.q_labels, rep.g_labels,
                                                                                  K, rep.ignore), 4)}
    return {"alpha": alpha, "validation_queries": len(vq), "report_queries": len(rq), "encoder": encoder,
            "rows": out}


def text_fusion(fashion_root: str | Path, multiview_root: str | Path, backbone, cache_root: str | Path,
                progress: bool = True) -> dict:
    """Run experiment 4 on the shoes (articleType) and the Luma products (department)."""
    sets, cat = embedded(shoe_catalog(fashion_root), backbone, cache_root, progress)
    x = np.stack([s[0] for s in sets])  # (N, D)
    types = [a.group for a in cat]
    titles = [a.title or "" for a in cat]
    shoes = compare(x @ x.T, titles, leave_one_out("shoes", sets, cat.ids, types))
    named = [t.split()[0].lower() in title.lower() for t, title in zip(types, titles)]  # "Sports" in the title?
    shoes["titles_naming_type"] = float(np.mean(named))
    sets, cat = embedded(load_catalog(multiview_root), backbone, cache_root, progress)
    vsets, info = luma_views(sets, cat)
    p = leave_one_out("luma", vsets, [i["id"] for i in info], [i["category"] for i in info],
                      [LUMA_VIEWS] * len(vsets))
    luma = compare(matcher_scores("ordered", p), [i["title"] or "" for i in info], p)
    return {"shoes": shoes, "luma": luma}
