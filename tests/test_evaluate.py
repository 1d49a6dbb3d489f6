"""The harness: every method on the same protocols; the held-out split is the one the head never saw."""

from __future__ import annotations

import json

import numpy as np
import torch

from setenc.catalogs import Article, Catalog, catalog_key, load_catalog, split_catalog
from setenc.evaluation.report import choose_split, evaluate_catalog, evaluate_sets, markdown_report
from setenc.heads.model import create_head
from setenc.encoder import SetEncoder


def _clustered(n_groups=6, per=3, d=16, seed=0):
    """Articles of one group share a centre; photos are noisy copies; views cycle front/back/side."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, d))
    sets, arts = [], []
    tags = ["front", "back", "side", "top"]
    for g in range(n_groups):
        for k in range(per):
            n = int(rng.integers(2, 5))
            s = centres[g] + 0.6 * rng.normal(size=(n, d))
            sets.append((s / np.linalg.norm(s, axis=1, keepdims=True)).astype(np.float32))
            arts.append(Article(f"g{g}a{k}", tuple(f"/x/{g}_{k}_{i}.jpg" for i in range(n)), f"g{g}",
                                views=tuple(tags[i % 4] for i in range(n))))
    return sets, Catalog(arts, root=None, name="clustered")


def _mean_encoder(d=16):
    return SetEncoder(create_head("mean", d), {"name": "fake", "kwargs": {}, "id": "fake:v1"}, d)


def test_every_method_and_protocol_has_a_row():
    sets, cat = _clustered()
    rows, scores = evaluate_sets(sets, cat, {"mean-head": _mean_encoder()})
    got = {(r["method"], r["protocol"]) for r in rows}
    for proto in ("group", "self", "single"):
        for method in ("mean", "chamfer", "recursive", "linear", "ordered", "mean-head"):
            assert (method, proto) in got
    for r in rows:
        assert 0 <= r["recall@1"] <= r["recall@5"] <= r["recall@10"] <= 1 and 0 <= r["map@r"] <= 1
    assert [r["protocol"] for r in rows][0] == "group"


def test_mean_head_equals_mean_matcher():
    sets, cat = _clustered(seed=1)
    rows, scores = evaluate_sets(sets, cat, {"mean-head": _mean_encoder()}, matchers=["mean"])
    for proto in ("group", "self", "single"):
        np.testing.assert_allclose(scores[("mean", proto)], scores[("mean-head", proto)], atol=1e-5)


def test_single_photo_catalog_reports_one_matcher_row():
    rng = np.random.default_rng(0)
    sets = [rng.normal(size=(1, 8)).astype(np.float32) for _ in range(6)]
    cat = Catalog([Article(f"a{i}", (f"/x/{i}.jpg",), f"g{i % 2}") for i in range(6)], root=None)
    rows, _ = evaluate_sets(sets, cat, {})
    assert [(r["method"], r["protocol"]) for r in rows] == [("mean", "group"), ("mean", "single"),
                                                           ("mean", "group+expanded")]  # as an export searches
    rows, _ = evaluate_sets(sets, cat, {}, expansion=None)
    assert [(r["method"], r["protocol"]) for r in rows] == [("mean", "group"), ("mean", "single")]


def test_split_holds_out_what_the_head_trained_on(tiny_catalog):
    cat = load_catalog(tiny_catalog)
    enc = _mean_encoder(8)
    test, val, why = choose_split(cat, {"h": enc}, "auto")
    assert test is cat and val is None and "whole catalog" in why
    enc.training_info = {"catalog": catalog_key(cat), "split": [0.5, 0.25, 0.25], "split_by": "group", "split_seed": 0}
    test, val, why = choose_split(cat, {"h": enc}, "auto")
    assert test.ids == split_catalog(cat, (0.5, 0.25, 0.25))["test"].ids and "held out" in why
    assert val.ids == split_catalog(cat, (0.5, 0.25, 0.25))["val"].ids
    # a run without a validation split: matchers are tuned on its training split, never on the test articles
    enc.training_info["split"] = [0.75, 0.0, 0.25]
    test, val, _ = choose_split(cat, {"h": enc}, "auto")
    parts = split_catalog(cat, (0.75, 0.0, 0.25))
    assert test.ids == parts["test"].ids and val.ids == parts["train"].ids and not set(val.ids) & set(test.ids)


def test_evaluate_catalog_writes_report(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    enc = SetEncoder.parameter_free(fake_backbone)
    report = evaluate_catalog(cat, fake_backbone, tmp_path / "cache", {"mean-head": enc}, out_dir=tmp_path / "r",
                              pictures=False, progress=False)
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["rows"] == report["rows"] and data["backbone"] == "fake:v1"
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| group | mean |" in md and "fake:v1" in md
    assert markdown_report(report) == md


def test_tuning_a_large_split_uses_whole_groups_up_to_the_cap(monkeypatch):
    import setenc.evaluation.tuning as ev

    rng = np.random.default_rng(0)
    cat = Catalog([Article(f"a{i}", (f"/x/{i}.jpg",), f"g{i // 3}") for i in range(60)], root=None)
    sets = [rng.normal(size=(2, 8)).astype(np.float32) for _ in range(60)]
    seen = []
    monkeypatch.setattr(ev, "make_protocols", lambda s, c, names: seen.append(c) or [])
    assert ev.tune_matchers(sets, cat, max_articles=20) == {}
    kept = seen[0]
    groups = {a.group for a in kept}
    assert len(kept) == 18 and all(sum(a.group == g for a in cat) == 3 for g in groups)  # whole groups only
    assert ev.tune_matchers(sets, cat, max_articles=20) == {} and seen[1].ids == kept.ids  # deterministic
    ev.tune_matchers(sets, cat, max_articles=100)
    assert len(seen[2]) == 60  # under the cap: every article
