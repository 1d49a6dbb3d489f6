"""The full-gallery protocol (held-out queries among every article of the catalogue), intervals in reports and
sweep tables (issue 28 item 1, issue 26 "numbers with their noise")."""

from __future__ import annotations

import numpy as np
import pytest

from setenc.catalogs import Article, Catalog, split_catalog
from setenc.evaluation.metrics import vector_metrics
from setenc.evaluation.protocols import full_gallery_protocols, group_protocol
from setenc.evaluation.report import evaluate_sets, markdown_report
from setenc.training.sweep import markdown_table, record, summarise


def _catalog(n_groups=30, per=3, d=8, seed=0, partition=False):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, d))
    sets, arts = [], []
    for g in range(n_groups):
        for k in range(per):
            s = centres[g] + 0.9 * rng.normal(size=(2, d))
            sets.append((s / np.linalg.norm(s, axis=1, keepdims=True)).astype(np.float32))
            arts.append(Article(f"g{g}a{k}", (f"/x/{g}_{k}_0.jpg", f"/x/{g}_{k}_1.jpg"), f"g{g}",
                                partition=("query" if k == 0 else "gallery") if partition else None))
    return sets, Catalog(arts, root=None, name="toy")


def _split(sets, cat):
    parts = split_catalog(cat, (0.7, 0.0, 0.3), "group", seed=1)
    by_id = dict(zip(cat.ids, sets))
    test, rest = parts["test"], parts["train"]
    return [by_id[i] for i in test.ids], test, [by_id[i] for i in rest.ids], rest


@pytest.mark.parametrize("partition", [False, True])
def test_full_gallery_adds_every_other_article_as_a_distractor(partition):
    t_sets, test, r_sets, rest = _split(*_catalog(partition=partition))
    p = group_protocol(t_sets, test)
    x2, full = full_gallery_protocols(p, r_sets, rest)
    assert (x2.name, full.name) == ("group-x2", "group-all")
    assert len(full.gallery) == len(p.gallery) + len(rest) and len(x2.gallery) == 2 * len(p.gallery)
    assert full.q_ids == p.q_ids and full.g_ids[:len(p.gallery)] == p.g_ids  # held-out positions kept: exclude holds
    assert set(full.g_ids[len(p.gallery):]) == set(rest.ids)
    assert not set(full.q_labels) & set(full.g_labels[len(p.gallery):])  # a trained product is never a hit
    # brute force: each query ranks the whole catalogue but itself; hits only among held-out articles of its group
    q = np.stack([s.mean(0) for s in full.queries])
    g = np.stack([s.mean(0) for s in full.gallery])
    got = vector_metrics(q, g, full.q_labels, full.g_labels, ks=(1,), exclude=full.exclude, bootstrap=0)
    hits = []
    for i, qid in enumerate(full.q_ids):
        s = q[i] @ g.T
        if full.exclude is not None and full.exclude[i] >= 0:
            s[full.exclude[i]] = -np.inf
        hits.append(full.g_labels[int(np.argmax(s))] == full.q_labels[i])
    assert got["recall@1"] == pytest.approx(np.mean(hits))
    held = vector_metrics(q, g[:len(p.gallery)], p.q_labels, p.g_labels, ks=(1,), exclude=p.exclude, bootstrap=0)
    assert got["recall@1"] <= held["recall@1"]  # distractors can only push hits down


def test_x2_left_out_when_it_is_the_whole_catalogue():
    t_sets, test, r_sets, rest = _split(*_catalog())
    p = group_protocol(t_sets, test)
    few = rest.subset(rest.ids[:3])
    assert [x.name for x in full_gallery_protocols(p, r_sets[:3], few)] == ["group-all"]


def test_evaluate_sets_scores_every_gallery_with_intervals():
    t_sets, test, r_sets, rest = _split(*_catalog())
    rows, _ = evaluate_sets(t_sets, test, {}, ["mean", "chamfer"], ("group",), others=(r_sets, rest))
    got = {(r["method"], r["protocol"]): r for r in rows}
    assert set(got) == {(m, p) for m in ("mean", "chamfer") for p in ("group", "group-x2", "group-all")} | {
        ("mean", "group-all+expanded")}  # mean pooling also as an export searches it; a matcher has no vector
    assert got[("mean", "group-all")]["gallery"] == got[("mean", "group-all+expanded")]["gallery"] == len(test) + len(rest)
    for r in rows:
        for k in ("recall@1", "recall@5", "recall@10", "map@r"):
            lo, hi = r[f"{k}_ci"]
            assert lo <= r[k] <= hi


def test_markdown_report_shows_intervals_and_calls_few_queries_anecdotes():
    t_sets, test, r_sets, rest = _split(*_catalog())
    rows, _ = evaluate_sets(t_sets, test, {}, ["mean"], ("group",), others=(r_sets, rest))
    report = {"catalog": "toy", "articles": len(test), "split": "test", "backbone": "fake", "tuned": {}, "rows": rows}
    r = rows[0]
    assert r["queries"] >= 30
    md = markdown_report(report)
    assert f"{r['recall@1']:.3f} ({r['recall@1_ci'][0]:.3f}–{r['recall@1_ci'][1]:.3f})" in md
    assert "anecdotes" not in md
    few = [{**x, "queries": 12} for x in rows]
    assert "anecdotes" in markdown_report({**report, "rows": few}) and "`group` 12 queries" in markdown_report(
        {**report, "rows": few})
    old = [{k: v for k, v in x.items() if not k.endswith("_ci")} for x in rows]  # a report written before intervals
    assert f"| {old[0]['recall@1']:.3f} |" in markdown_report({**report, "rows": old})


def test_sweep_records_judge_one_protocol_and_keep_the_others():
    rows = [{"method": "mean", "protocol": p, "recall@1": r1, "map@r": mp, "queries": 40, "gallery": g,
             "recall@1_ci": [r1 - 0.05, r1 + 0.05], "map@r_ci": [mp - 0.1, mp + 0.1]}
            for p, r1, mp, g in (("group", 0.9, 0.7, 100), ("group-x2", 0.85, 0.6, 200), ("group-all", 0.8, 0.5, 350))]
    rec = record(rows, "group-all", "toy")
    assert (rec["recall@1"], rec["map@r"]) == (0.8, 0.5) and rec["recall@1_ci"] == pytest.approx([0.75, 0.85])
    assert rec["galleries"]["group"]["recall@1"] == 0.9
    with pytest.raises(ValueError, match="group-all"):
        record(rows[:1], "group-all", "toy")
    recs = [{"method": "mean", "seconds": 0.0, **rec}, {"method": "mean", "seconds": 0.0, **rec, "recall@1": 0.6}]
    table = markdown_table(summarise(recs), "group-all")
    assert "| method | runs | R@1 | MAP@R | one run's 95% CI (R@1 / MAP@R) | group (100) R@1 / MAP@R | " \
           "group-x2 (200) R@1 / MAP@R | train s |" in table
    want = "| **mean** | 2 | 0.700 ± 0.100 | 0.500 ± 0.000 | ±0.050 / ±0.100 | 0.900 / 0.700 | 0.850 / 0.600 | 0.0 |"
    assert want in table
