"""The held-out comparison: every learned head and every matcher, on the same articles, the same protocols.

Which articles: those no checkpoint trained or validated on, by the record each checkpoint keeps of its training
articles (ids and photo content hashes, `evaluation.heldout`), wherever the catalogue lives; the report counts the
ones left out. A checkpoint older than that record is judged as before: the catalog's test split when it was
trained on this catalog (same name and ids, same split settings), else the whole catalog. The matchers'
`s` / `m` are tuned on the validation split when there is one. One row per (method, protocol):
Recall@1/5/10, MAP@R and milliseconds per query (for a head: encoding the query set and ranking the
pre-encoded gallery; for a matcher: scoring the query set against every gallery set).
With a title encoder (`text=`), title-only and photos + title fusion rows are added (`evaluation.titles`).
Heads are scored from their vectors in bounded memory (`vector_metrics`: no (Q, G) matrix, same numbers), so a
large gallery is evaluated for heads; the matchers need (Q, G) by nature.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from setenc.catalogs import Catalog, catalog_key, split_catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.evaluation.heldout import (SEEN, PhotoHashes, final_checkpoint_error, overlap, read_hashes,
                                      split_by_record)
from setenc.evaluation.metrics import retrieval_metrics, vector_metrics
from setenc.evaluation.protocols import (MEANING, METRICS, PROTOCOLS, Protocol, expanded_rows, full_gallery_protocols,
                                         make_protocols, mean_vectors, result_row)
from setenc.evaluation.titles import TUNE_FRACTION, check_titles, save_fused, title_rows, tune_fusions
from setenc.evaluation.tuning import tune_matchers
from setenc.matching.matchers import create_matcher, list_matchers, pairwise_scores
from setenc.matching.calibration import check_catalog, report_lines
from setenc.photos import photo_sets
from setenc.search.expansion import Expansion, articles_per_group, choose_expansion, resolve
from setenc.photos.cache import EmbeddingCache
from setenc.photos.tta import TTA, with_tta
from setenc.heads.sets import pad_sets
from setenc.titles.encoders import create_text_encoder

MIN_MAP_POINTS = 10  # fewer articles than this: no 2-D map in the report
ANECDOTE = 30  # fewer queries than this in a protocol: the report says its numbers are anecdotes
KEEP_SCORES = 1 << 24  # a head's (Q, G) cosines are kept for the pictures only up to this many entries (64 MB)


def padded_sets(sets: list[np.ndarray], views: list | None, vocab: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x, mask = pad_sets(sets)
    if views is None or any(v is None for v in views):
        return x, mask, None
    ids = torch.full(mask.shape, -1, dtype=torch.long)
    for i, v in enumerate(views):
        ids[i, : len(v)] = torch.tensor([vocab.setdefault(t, len(vocab)) for t in v])
    return x, mask, ids


def matcher_scores(matcher, p: Protocol) -> np.ndarray:
    """(Q, G) scores of a matcher (or its name) on a protocol; view tags reach `ordered` when every set has them."""
    vocab: dict = {}
    qx, qm, qv = padded_sets(p.queries, p.q_views, vocab)
    gx, gm, gv = padded_sets(p.gallery, p.g_views, vocab)
    return pairwise_scores(matcher, qx, qm, gx, gm, qv, gv).numpy()


def choose_split(catalog: Catalog, encoders: dict[str, SetEncoder], split: str,
                 photo_hashes: PhotoHashes = read_hashes) -> tuple[Catalog, Catalog | None, str]:
    """(articles to score, articles to tune matchers on or None, a sentence saying which and why).

    Matchers are tuned on the validation split, or on the training split when the run had none. A test split
    with no articles (a checkpoint trained on every article) is an error that says what to do, never an empty table.
    `photo_hashes`: the photos' content hashes (the embedding cache's `hashes` saves reading them again).
    """
    if split not in ("auto", "test", "all"):
        raise SetencError(f"split must be auto, test or all, got {split!r}")
    records = [e.training_info[SEEN] for e in encoders.values() if SEEN in e.training_info]
    if records:
        return split_by_record(catalog, encoders, split, overlap(catalog, records, photo_hashes))
    trained = [e for e in encoders.values() if e.training_info.get("catalog") == catalog_key(catalog)]
    if split == "all" or (split == "auto" and not trained):
        if not trained:
            return catalog, None, "whole catalog (no head was trained on it)"
        info = trained[0].training_info
        seen = sum(len(parts) for k, parts in _parts(catalog, info).items() if k != "test")
        return catalog, None, (f"whole catalog, INCLUDING the {seen} articles the head trained or validated on: "
                               "its scores are optimistic; use --split test for held-out articles only")
    info = (trained or list(encoders.values()) or [None])[0]
    info = info.training_info if info is not None else {}
    parts = _parts(catalog, info)
    if not len(parts["test"]):
        fractions = list(info.get("split", []))
        heldout = next((e.metrics.get("heldout") for e in trained if e.metrics.get("heldout")), None)
        if heldout and "test/group" in heldout:
            raise final_checkpoint_error(catalog, heldout)
        raise SetencError(f"{catalog.name}: the test split holds no article (the head was trained with split "
                          f"{fractions or 'default'}: nothing was held out); evaluate it on another catalogue, or pass "
                          "--split all to score every article (optimistic: the head saw them)")
    tune_on = parts["val"] if len(parts["val"]) else parts["train"]  # never the test articles (as in the sweeps)
    old = "; the checkpoint predates the record of its training articles, so held out is judged by this catalogue's " \
        "name and ids" if encoders else ""
    return parts["test"], tune_on, f"test split ({len(parts['test'])} articles held out from training){old}"


def _parts(catalog: Catalog, info: dict) -> dict[str, Catalog]:
    return split_catalog(catalog, tuple(info.get("split", (0.8, 0.1, 0.1))), info.get("split_by", "group"),
                         info.get("split_seed", 0))


def evaluate_sets(
    sets: list[np.ndarray],
    catalog: Catalog,
    encoders: dict[str, SetEncoder],
    matchers: Sequence[str] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    matcher_kwargs: dict[str, dict] | None = None,
    others: tuple[list[np.ndarray], Catalog] | None = None,
    expansion: str | Expansion | None = "auto",
) -> tuple[list[dict], dict]:
    """Rows of metrics for every method and protocol on these per-article photo vectors.

    `others`: the catalogue's other articles (sets, catalog) — those a head trained on; given, the `group` protocol
    is also scored in galleries that hold them as distractors (`group-x2`, `group-all`: `full_gallery_protocols`).
    `expansion`: the vector methods (heads, and mean pooling when the `mean` matcher runs) are also scored as an
    export searches them, with neighbour expansion (`setenc.search.expansion`), on the protocol whose gallery is
    the whole catalogue (`group-all`, else `group`), as `<protocol>+expanded`. "auto": each head's own on this
    catalogue (`expansion_for`), mean pooling the first head's (without one, `choose_expansion` for products);
    None, or "auto" where the rule says none: no such rows.
    Returns (rows, scores): scores[(method, protocol)] = the (Q, G) score matrix, for pictures (a head's only while
    Q × G ≤ `KEEP_SCORES`: its metrics never need it).
    """
    rows, scores = [], {}
    ps = make_protocols(sets, catalog, protocols)
    if others is not None:
        ps += [f for p in ps if p.name == "group" for f in full_gallery_protocols(p, *others)]
        catalog = catalog.with_articles(catalog.articles + others[1].articles)  # every id's title, for fusions
    for p in ps:
        one_photo = max(len(s) for s in p.queries + p.gallery) == 1
        tagged = all(v is not None for v in (p.q_views or [None]) + (p.g_views or [None]))
        for name in list_matchers() if matchers is None else matchers:
            m = create_matcher(name, **(matcher_kwargs or {}).get(name, {}))
            if one_photo and name != "mean":
                continue  # on single photos every matcher is the cosine: one row says it
            if m.needs_views and not tagged:
                continue  # no view tags: nothing to order by
            t = time.perf_counter()
            s = matcher_scores(m, p)
            seconds = time.perf_counter() - t
            metrics = retrieval_metrics(s, p.q_labels, p.g_labels, ignore=p.ignore)
            rows.append(result_row(name, p, metrics, seconds, m.describe() if m.tunable else None))
            scores[(name, p.name)] = s
        for name, enc in encoders.items():
            encode = set_vectors(enc, catalog)
            g = encode(p.gallery, p.g_views, p.g_ids)  # index time, not query time
            t = time.perf_counter()
            q = encode(p.queries, p.q_views, p.q_ids)
            metrics = vector_metrics(q, g, p.q_labels, p.g_labels, exclude=p.exclude)  # ranks: part of query time
            rows.append(result_row(name, p, metrics, time.perf_counter() - t))
            if len(q) * len(g) <= KEEP_SCORES:
                scores[(name, p.name)] = q @ g.T
    whole = next((p for p in ps if p.name == ("group-all" if others is not None else "group")), None)
    if expansion is not None and whole is not None:
        own = {name: resolve(expansion, enc, catalog) for name, enc in encoders.items()}
        methods = {name: (set_vectors(enc, catalog), own[name]) for name, enc in encoders.items()}
        if "mean" in (list_matchers() if matchers is None else matchers):
            auto = next(iter(own.values())) if own else choose_expansion(None, articles_per_group(catalog))
            methods = {"mean": (mean_vectors, auto if expansion == "auto" else Expansion.parse(expansion)), **methods}
        rows += expanded_rows(whole, methods)
    return rows, scores


def set_vectors(enc: SetEncoder, catalog: Catalog):
    """`(sets, view tags, article ids) -> vectors` of an encoder; a learned fusion's head takes each title too."""
    if enc.head.titles is None:
        return lambda sets, views, ids: enc.encode_sets(sets, views=views)
    title = {a.id: a.title for a in catalog.articles}
    return lambda sets, views, ids: enc.encode_articles(sets, [title[i] for i in ids], views=views)


def evaluate_catalog(
    catalog: Catalog,
    backbone,
    cache_root,
    encoders: dict[str, SetEncoder] | None = None,
    matchers: Sequence[str] | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    split: str = "auto",
    tune: bool = True,
    out_dir: str | Path | None = None,
    pictures: bool = True,
    progress: bool = True,
    text: str | None = None,
    text_options: dict | None = None,
    tta: str | None = None,
    expansion: str | Expansion | None = "auto",
) -> dict:
    """Embed, pick held-out articles, score every method, and write `report.md` / `report.json` / pictures.

    Args:
        encoders: name -> trained `SetEncoder` (their backbone must be `backbone`).
        split: "auto" | "test" | "all" (see the module docstring).
        text: a title encoder name (`setenc.titles.encoders`): adds title-only and fused rows, and writes each fused encoder
            to `<out_dir>/fused/`. Its weight is tuned on the validation / training split, or, when the scored
            articles are the whole catalogue, on a hashed `TUNE_FRACTION` of them that is then not scored.
        tta: photo variants for every row (`setenc.photos.tta`); None = the ones the checkpoints record.
        expansion: the `+expanded` rows (`evaluate_sets`): "auto", a spec ("dba5+qe2") or None / "none".
    """
    encoders = dict(encoders or {})
    for enc in encoders.values():
        enc.set_backbone(backbone)
    tta = choose_tta(encoders, tta)
    if text is not None:
        check_titles(catalog)  # before any work: a catalogue without titles is a one-line error
        text_encoder = create_text_encoder(text, **(text_options or {}))
    expansion = expansion if expansion == "auto" else Expansion.parse(expansion)  # a bad spec: before any work
    hashes = EmbeddingCache(cache_root, backbone.id, backbone.dim).hashes  # content hashes, stat-cached
    test, val, why = choose_split(catalog, encoders, split, hashes)
    rest = catalog.subset(set(catalog.ids) - set(test.ids), name=f"{catalog.name}-rest") if len(test) < len(catalog) \
        else None  # held-out articles are also searched among the rest of the catalogue (`group-all`)
    if text is not None and val is None:
        parts = split_catalog(test, (TUNE_FRACTION, 0.0, 1.0 - TUNE_FRACTION), "article")
        val, test = parts["train"], parts["test"]
        val.name = f"{catalog.name}-title-tuning"
        why += f"; {len(val)} of them (hashed ids) only tune the title weight and the matchers, and are not scored"
    sets, kept, dropped, report_embed = photo_sets(test, backbone, cache_root, progress=progress, tta=tta)
    tuned, val_sets = {}, None
    if val is not None and len(val) and (tune or text is not None):
        val_sets = photo_sets(val, backbone, cache_root, progress=progress, tta=tta)[:2]
    if tune and val_sets is not None:
        tuned = tune_matchers(*val_sets, names=matchers)
    others = photo_sets(rest, backbone, cache_root, progress=progress, tta=tta)[:2] if rest is not None else None
    rows, scores = evaluate_sets(sets, kept, encoders, matchers, protocols, tuned, others, expansion)
    text_info = None
    if text is not None:
        text_encoder.fit([a.title for a in catalog.articles])  # label-free: every title of the catalogue
        methods = {"mean": SetEncoder.parameter_free(backbone), **encoders}
        fused = tune_fusions(text_encoder, methods, *val_sets, cache_root)
        rows += title_rows(text_encoder, fused, make_protocols(sets, kept, protocols), kept, cache_root)
        text_info = {"encoder": text_encoder.id, "dim": text_encoder.dim, "tuned_on": val_sets[1].name,
                     "weights": {k: e.fusion.weight for k, e in fused.items()},
                     "tuning": {k: e.fusion.metrics for k, e in fused.items()}}
    if not rows:
        raise SetencError(f"{catalog.name}: none of the protocols {list(protocols)} can run on these {len(kept)} "
                          "articles (group retrieval needs a group with two articles, self retrieval an article with "
                          "two photos); evaluate more articles")
    blocks = {name: len(e.head.classes) for name, e in encoders.items() if e.head.classes}  # class blocks' widths
    report = {"catalog": catalog.name, "articles": len(kept), "dropped_articles": dropped, "backbone": backbone.id,
              "tta": str(tta),
              **({"classes": blocks} if blocks else {}), "heads": list(encoders),
              "split": why, "tuned": {k: v for k, v in tuned.items()}, "tuned_on": val.name if tuned else None,
              "embedding": report_embed.summary(), "skipped_photos": report_embed.skipped_lines(),
              "rows": rows, **({"text": text_info} if text_info else {})}
    calibrated = {name: check_catalog(e.calibration, e.encode_sets(sets, views=[a.views for a in kept]), kept,
                                      None if out_dir is None else Path(out_dir) / f"reliability-{name}.png")
                  for name, e in encoders.items() if e.calibration is not None and e.head.titles is None}
    if calibrated:
        report["calibration"] = calibrated
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if text_info:
            text_info["checkpoints"] = save_fused(fused, out)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.md").write_text(markdown_report(report))
        if pictures:
            report["pictures"] = _pictures(out, sets, kept, encoders, rows, scores)
            (out / "report.md").write_text(markdown_report(report))
    return report


def choose_tta(encoders: dict[str, SetEncoder], tta: str | None) -> TTA:
    """The photo variants every row is scored with, set on every encoder: rows must compare the same vectors.

    None takes the one the checkpoints record (they must agree); one given overrides theirs, e.g. to try test-time
    variants on a head trained without them.
    """
    recorded = {str(e.tta) for e in encoders.values()}
    if tta is None and len(recorded) > 1:
        raise SetencError(f"the checkpoints record different photo variants (tta) {sorted(recorded)}; evaluate them "
                          "apart, or pass --tta to score all with one")
    chosen = TTA.parse(tta if tta is not None else next(iter(recorded), None))
    for enc in encoders.values():
        enc.backbone_spec = with_tta(enc.backbone_spec, chosen)
    return chosen


def markdown_report(report: dict) -> str:
    """The report as markdown: what was measured on what, then one table row per method and protocol."""
    tuned = report["tuned"]
    options = "; ".join(f"{name} {create_matcher(name, **kw).describe()}" for name, kw in tuned.items())
    lines = [f"# setenc evaluation — {report['catalog']}", "",
             f"- articles: {report['articles']} ({report['split']}); backbone: `{report['backbone']}`"
             + (f"; photo variants (TTA): `{report['tta']}`" if report.get("tta", "none") != "none" else ""),
             *[f"- `{name}` appends the probabilities of {k} classes (its class block, setenc/heads/classes.py)"
               for name, k in report.get("classes", {}).items()],
             f"- matcher options: {options or 'defaults (nothing held out to tune them on)'}"
             + (f" — tuned on `{report['tuned_on']}`, never on the scored articles" if report.get("tuned_on") else ""),
             *_text_lines(report.get("text")),
             *_anecdote_lines(report["rows"]),
             *report_lines(report.get("calibration", {})),
             "",
             "| protocol | method | R@1 | R@5 | R@10 | MAP@R | ms/query | queries | gallery |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        cells = " | ".join(_with_interval(r, k) for k in METRICS)
        lines.append(f"| {r['protocol']} | {r['method']} | {cells} | {r['ms_per_query']:.2f} | {r['queries']} | "
                     f"{r['gallery']} |")
    lines += ["", "Protocols:"] + [f"- `{p}`: {MEANING[p]}" for p in dict.fromkeys(r["protocol"] for r in report["rows"])]
    lines += _method_lines(report)
    lines += ["", "R@K: share of queries with a hit in the top K; MAP@R: mean average precision at R (R = the query's "
              "number of hits); (lo–hi): its 95% interval, a seeded bootstrap over the queries (which queries were "
              "drawn, not how training went); ms/query: scoring one query against the whole gallery."]
    for name in report.get("pictures", []):
        lines += ["", f"![{name}]({name})"]
    return "\n".join(lines) + "\n"


def _with_interval(row: dict, metric: str) -> str:
    """`0.944 (0.921–0.963)`: a metric and its 95% interval (rows of old reports have none)."""
    ci = row.get(f"{metric}_ci")
    return f"{row[metric]:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")


def _anecdote_lines(rows: list[dict]) -> list[str]:
    """A warning when a protocol rests on fewer than `ANECDOTE` queries: one query moves its R@1 by > 3 points."""
    few = {r["protocol"]: r["queries"] for r in rows if r["queries"] < ANECDOTE}
    if not few:
        return []
    counts = ", ".join(f"`{p}` {n} quer{'y' if n == 1 else 'ies'}" for p, n in few.items())
    return [f"- **anecdotes, not measurements**: {counts} (fewer than {ANECDOTE}); the intervals show how little "
            "they pin down — score more articles"]


def _method_lines(report: dict) -> list[str]:
    """What each method of the table is: the learned heads, and each matcher with its options in words."""
    methods = dict.fromkeys(r["method"] for r in report["rows"])
    heads = [m for m in report.get("heads", []) if m in methods]
    matchers = [m for m in methods if m in list_matchers()]
    lines = ["", "Methods (S: the photo-by-photo cosine matrix of two articles):"]
    lines += [f"- `{h}`: the learned set head of a checkpoint (each photo vector through trained weights, pooled "
              "into one vector per article; trained on other articles than these)" for h in heads]
    for name in matchers:
        m = create_matcher(name)
        lines.append(f"- `{name}` (a matcher, nothing trained): {type(m).__doc__.strip().splitlines()[0]}")
    if any(create_matcher(n).tunable for n in matchers):
        lines.append("- `s`: the similarity below which a matched photo pair is not counted; `m`: at most the m best "
                     "matched pairs count (None: no threshold / no limit)")
    return lines if heads or matchers else []


def _text_lines(info: dict | None) -> list[str]:
    if not info:
        return []
    weights = ", ".join(f"{k} w={w:g}" for k, w in info["weights"].items())
    saved = ", ".join(f"`{p}`" for p in info.get("checkpoints", {}).values())
    return [f"- titles: `{info['encoder']}` ({info['dim']}-d); photo weight w tuned on `{info['tuned_on']}` "
            f"(never the scored articles): {weights}" + (f"; fused checkpoints: {saved}" if saved else "")]


def _pictures(out: Path, sets, catalog: Catalog, encoders, rows, scores) -> list[str]:
    """A retrieval grid (best head vs best matcher) and a 2-D map of article vectors coloured by group."""
    from setenc.evaluation.plots import embedding_map, retrieval_grid
    from setenc.evaluation.protocols import group_protocol

    p = group_protocol(sets, catalog)
    if p is None:
        return []
    group_rows = [r for r in rows if r["protocol"] == "group" and (r["method"], "group") in scores]  # kept matrices
    heads = [r for r in group_rows if r["method"] in encoders]
    match = [r for r in group_rows if r["method"] not in encoders]
    best = [max(rs, key=lambda r: r["map@r"])["method"] for rs in (heads, match) if rs]
    arts = {a.id: a for a in catalog.articles}
    picks = np.linspace(0, len(p.q_ids) - 1, num=min(4, len(p.q_ids))).astype(int)
    grid = []
    for qi in picks:
        for method in best:
            s = scores[(method, "group")][qi].copy()
            if p.exclude is not None and p.exclude[qi] >= 0:
                s[p.exclude[qi]] = -np.inf
            top = [j for j in np.argsort(-s, kind="stable") if np.isfinite(s[j]) and p.g_ids[j] != p.q_ids[qi]][:5]
            hits = [(p.g_ids[j], list(arts[p.g_ids[j]].images), float(s[j]), p.g_labels[j] == p.q_labels[qi])
                    for j in top]
            grid.append((f"{method}: {p.q_ids[qi]}", list(arts[p.q_ids[qi]].images), hits))
    names = [retrieval_grid(grid, out / "retrieval_grid.png").name] if grid else []
    vec_method = best[0] if best else None
    vecs = encoders[vec_method].encode_sets(sets) if vec_method in encoders else \
        np.stack([s.mean(0) / np.linalg.norm(s.mean(0)) for s in sets])
    labels = [a.group or a.id for a in catalog.articles]
    if len(vecs) >= MIN_MAP_POINTS:  # a 2-D map of fewer articles says nothing (and t-SNE needs a few)
        whose = f"{vec_method} head vectors" if vec_method in encoders else "mean-pooled photo vectors"
        names.append(embedding_map(vecs, labels, out / "embedding_map.png",
                                   title=f"{whose}, {len(vecs)} articles, coloured by group").name)
    return names
