"""Retrieval metrics against hand-computed cases and a naive per-query reference; the bounded-memory vector path
against the matrix path."""

import math
from pathlib import Path

import numpy as np
import pytest

from setenc.catalogs import Article, Catalog
from setenc.evaluation.metrics import (bootstrap_intervals, map_at_r, recall_at_k, retrieval_metrics, top_ranks,
                                      vector_metrics)
from setenc.evaluation.protocols import group_protocol


def naive_metrics(scores, q_labels, g_labels, ks, ignore=None):
    """One query at a time, straight from the definitions (sorted by (-score, index))."""
    recalls, maps, skipped = {k: [] for k in ks}, [], 0
    for q, label in enumerate(q_labels):
        items = [j for j in range(len(g_labels)) if ignore is None or not ignore[q, j]]
        ranked = sorted(items, key=lambda j: (-scores[q, j], j))
        rel = [label is not None and g_labels[j] == label for j in ranked]
        r = sum(rel)
        if r == 0:
            skipped += 1
            continue
        for k in ks:
            recalls[k].append(float(any(rel[:k])))
        maps.append(sum(sum(rel[:i]) / i for i in range(1, r + 1) if rel[i - 1]) / r)
    out = {f"recall@{k}": float(np.mean(recalls[k])) for k in ks}
    out.update({"map@r": float(np.mean(maps)), "queries": len(maps), "queries_without_positive": skipped})
    return out


def test_hand_computed_3x5():
    g_labels = ["a", "b", "a", "b", "c"]
    q_labels = ["a", "b", "c"]
    scores = np.array([
        # ranks: g1(b) g2(a) g3(b) g4(c) g0(a) -> rel 0 1 0 0 1, R=2: MAP@R = (1/2)/2 = 0.25
        [0.1, 0.9, 0.8, 0.3, 0.2],
        # ties at 0.5 go by index: g4(c) g0(a) g1(b) g3(b) g2(a) -> rel 0 0 1 1 0, R=2: MAP@R = 0
        [0.5, 0.5, 0.4, 0.5, 0.6],
        # g4(c) first -> rel 1 0 0 0 0, R=1: MAP@R = 1
        [0.2, 0.1, 0.0, -0.1, 0.3],
    ])
    out = retrieval_metrics(scores, q_labels, g_labels, ks=(1, 2, 3))
    assert out["recall@1"] == pytest.approx(1 / 3)
    assert out["recall@2"] == pytest.approx(2 / 3)
    assert out["recall@3"] == pytest.approx(1.0)
    assert out["map@r"] == pytest.approx((0.25 + 0.0 + 1.0) / 3)
    assert out["queries"] == 3 and out["queries_without_positive"] == 0


def test_map_at_r_counts_only_the_first_r_ranks():
    rel = np.array([[True, False, True, True, False, False]])  # R = 3: P@1 = 1, P@3 = 2/3; rank 4 is past R
    assert map_at_r(rel)[0] == pytest.approx((1 + 2 / 3) / 3)
    assert map_at_r(rel[:, :3], n_pos=np.array([3]))[0] == pytest.approx((1 + 2 / 3) / 3)  # truncated top-k
    assert map_at_r(np.array([[True, True, False]]))[0] == 1.0
    assert math.isnan(map_at_r(np.zeros((1, 3), dtype=bool))[0])


def test_recall_at_k():
    rel = np.array([[False, False, True], [True, False, False], [False, False, False]])
    assert recall_at_k(rel, 1).tolist() == [0.0, 1.0, 0.0]
    assert recall_at_k(rel, 3).tolist() == [1.0, 1.0, 0.0]
    assert recall_at_k(rel, 10).tolist() == [1.0, 1.0, 0.0]  # k beyond the gallery


def test_ignore_mask_leave_one_out():
    labels = ["a", "a", "b"]
    scores = np.array([[1.0, 0.2, 0.5], [0.2, 1.0, 0.1], [0.5, 0.1, 1.0]])
    out = retrieval_metrics(scores, labels, labels, ks=(1,), ignore=np.eye(3, dtype=bool), bootstrap=0)
    # q0: g2(b) before g1(a) -> miss, MAP 0; q1: g0(a) first -> hit, MAP 1; q2 ('b') has no other positive
    assert out == {"recall@1": 0.5, "map@r": 0.5, "queries": 2, "queries_without_positive": 1}
    without = retrieval_metrics(scores, labels, labels, ks=(1,))
    assert without["recall@1"] == 1.0 and without["queries"] == 3  # the query itself would be found


def test_ignored_positive_is_not_counted_in_r():
    scores = np.array([[0.9, 0.8, 0.7]])
    ignore = np.array([[True, False, False]])
    out = retrieval_metrics(scores, ["a"], ["a", "b", "a"], ks=(1,), ignore=ignore)
    assert out["recall@1"] == 0.0 and out["map@r"] == 0.0  # R = 1 (g2), ranked second
    out = retrieval_metrics(scores, ["a"], ["a", "b", "b"], ks=(1,), ignore=ignore)
    assert out["queries"] == 0 and out["queries_without_positive"] == 1


def test_no_positive_queries_are_skipped_and_counted():
    scores = np.array([[0.1, 0.9], [0.3, 0.2], [0.5, 0.4]])
    out = retrieval_metrics(scores, ["x", "a", None], ["a", None], ks=(1,))
    assert out["queries"] == 1 and out["queries_without_positive"] == 2  # None never matches None
    assert out["recall@1"] == 1.0 and out["map@r"] == 1.0
    empty = retrieval_metrics(scores, ["x", "y", "z"], ["a", "b"], ks=(1,))
    assert empty["queries"] == 0 and math.isnan(empty["recall@1"]) and math.isnan(empty["map@r"])


@pytest.mark.parametrize("seed", range(3))
def test_matches_naive_reference(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n_q, n_g = 37, 53
    scores = rng.integers(0, 6, size=(n_q, n_g)).astype(np.float32)  # many ties
    q_labels = rng.integers(0, 5, n_q).tolist()
    g_labels = rng.integers(0, 7, n_g).tolist()
    ignore = rng.random((n_q, n_g)) < 0.1
    monkeypatch.setattr("setenc.evaluation.metrics._BLOCK", 5 * n_g)  # several query blocks
    for ign in (None, ignore):
        got = retrieval_metrics(scores, q_labels, g_labels, ks=(1, 5, 10), ignore=ign, bootstrap=0)
        want = naive_metrics(scores, q_labels, g_labels, (1, 5, 10), ign)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key]), key


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="must be"):
        retrieval_metrics(np.zeros((2, 3)), ["a"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), ["a"], ["a", "b"])
    ok = retrieval_metrics(np.array([[np.nan, 1.0]]), ["a"], ["a", "a"], ks=(1,), ignore=np.array([[True, False]]))
    assert ok["recall@1"] == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_top_ranks_is_the_head_of_a_stable_argsort(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, size=(9, 40)).astype(np.float32)  # ties everywhere, including at the cut
    s[0, :] = 1.0  # one row all tied
    s[1, 3] = -np.inf
    full = np.argsort(-s, axis=1, kind="stable")
    for depth in (1, 3, 7, 19, 25, 40, 60):
        np.testing.assert_array_equal(top_ranks(s, depth), full[:, :depth])


@pytest.mark.parametrize("seed", range(2))
def test_vector_metrics_equal_the_matrix_path(seed):
    """Chunked top-k on vectors == ranking the whole (Q, G) matrix, at several block sizes, with self-exclusion."""
    rng = np.random.default_rng(seed)
    arts = []
    for i in range(120):
        arts.append(Article(f"a{i}", (Path(f"/x/{i}.jpg"),), group=None if i % 17 == 0 else f"g{i % 23}"))
    cat = Catalog(arts, root=None)
    vecs = rng.normal(size=(120, 8)).astype(np.float32)  # continuous: ties have probability 0
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    p = group_protocol([v[None] for v in vecs], cat)
    assert p is not None and p.exclude is not None and (p.exclude >= 0).all()
    q, g = np.stack([s[0] for s in p.queries]), np.stack([s[0] for s in p.gallery])
    want = retrieval_metrics(q @ g.T, p.q_labels, p.g_labels, ks=(1, 5, 10, 200), ignore=p.ignore)
    naive = naive_metrics(q @ g.T, p.q_labels, p.g_labels, (1, 5, 10, 200), p.ignore)
    for key in naive:
        assert want[key] == pytest.approx(naive[key]), key
    for block in (1, 50, 7 * 120, 10**9):  # one row, under a row, several rows, everything at once
        got = vector_metrics(q, g, p.q_labels, p.g_labels, ks=(1, 5, 10, 200), exclude=p.exclude, block=block)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12), (block, key)
    no_self = vector_metrics(q, g, p.q_labels, p.g_labels, exclude=None)
    assert no_self["recall@1"] == 1.0  # each query finds itself first when nothing is excluded


def test_vector_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        vector_metrics(np.zeros((2, 3)), np.zeros((4, 2)), ["a", "b"], list("abcd"))
    with pytest.raises(ValueError, match="exclude"):
        vector_metrics(np.zeros((2, 3)), np.zeros((4, 3)), ["a", "b"], list("abcd"), exclude=np.array([0, 9]))


def naive_bootstrap(values, n, seed, level=0.95):
    """One resample at a time, from the definition: draw Q queries with replacement, average, take percentiles."""
    rng = np.random.default_rng(seed)
    means = [[row[idx].mean() for row in values] for idx in (rng.integers(0, values.shape[1], values.shape[1])
                                                             for _ in range(n))]
    return np.quantile(np.array(means), [(1 - level) / 2, (1 + level) / 2], axis=0)


def test_bootstrap_matches_naive_reference(monkeypatch):
    rng = np.random.default_rng(0)
    values = np.stack([rng.random(41) < 0.7, rng.random(41)]).astype(np.float64)  # (M, Q): a recall and a MAP
    monkeypatch.setattr("setenc.evaluation.metrics._BLOCK", 3 * 41)  # resamples drawn a few at a time
    lo, hi = bootstrap_intervals(values, n=200, seed=3)
    want_lo, want_hi = naive_bootstrap(values, 200, 3)
    np.testing.assert_allclose(lo, want_lo)
    np.testing.assert_allclose(hi, want_hi)
    assert (lo <= values.mean(1)).all() and (values.mean(1) <= hi).all()


def test_bootstrap_interval_has_the_binomial_width():
    """R@1 of 400 queries at p = 0.8: the 95% interval is about p ± 1.96 √(p(1 − p) / Q) = ± 0.039."""
    values = (np.arange(400) % 5 != 0).astype(np.float64)[None]  # exactly 0.8
    lo, hi = bootstrap_intervals(values)
    assert lo[0] == pytest.approx(0.8 - 0.039, abs=0.008) and hi[0] == pytest.approx(0.8 + 0.039, abs=0.008)
    assert np.isnan(bootstrap_intervals(np.zeros((2, 0)))[0]).all()  # no query: no interval


def test_every_metric_carries_a_seeded_interval():
    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(60, 8)), rng.normal(size=(90, 8))
    ql, gl = rng.integers(0, 6, 60).tolist(), rng.integers(0, 6, 90).tolist()
    out = vector_metrics(q, g, ql, gl)
    for k in ("recall@1", "recall@5", "recall@10", "map@r"):
        assert out[f"{k}_lo"] <= out[k] <= out[f"{k}_hi"] and out[f"{k}_lo"] < out[f"{k}_hi"], k
    assert out == retrieval_metrics(q @ g.T, ql, gl)  # same per-query values, same draws: same intervals
