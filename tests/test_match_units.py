"""Calibration, clusters and explanations against naive references (issue 27)."""

from __future__ import annotations

import itertools

import faiss
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from setenc.matching.calibration import Calibration, all_pairs, crossfit, ece, fit, fit_scores
from setenc.matching.clusters import cluster, pair_counts, range_hits, score_edges, vector_edges
from setenc.matching.explain import photo_pairs
from setenc.plumbing.errors import SetencError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _grouped(n_groups: int = 12, per: int = 3, dim: int = 16, noise: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, dim))
    labels = np.repeat(np.arange(n_groups), per)
    return _unit(centres[labels] + noise * rng.normal(size=(len(labels), dim))), [f"g{x}" for x in labels]


def test_precision_threshold_matches_brute_force():
    rng = np.random.default_rng(1)
    scores = rng.random(300)
    same = rng.random(300) < scores ** 3  # higher scores are more often the same group
    cal = fit(scores, same, articles=25, products=True)
    for p in (0.5, 0.7, 0.8, 0.9):
        want = min((t for t in scores if same[scores >= t].mean() >= p), default=np.inf)
        assert cal.threshold(p) == pytest.approx(want)
        hit = scores >= cal.threshold(p)
        assert not hit.any() or same[hit].mean() >= p


def test_probability_is_monotone_and_rescaled_for_larger_catalogues():
    rng = np.random.default_rng(2)
    scores = rng.random(500)
    same = rng.random(500) < scores ** 2
    cal = fit(scores, same, articles=40, products=True)
    grid = np.linspace(-0.2, 1.2, 200)
    for method in ("isotonic", "platt"):
        p = cal.probability(grid, method=method)
        assert np.all(np.diff(p) >= -1e-12) and p.min() >= 0 and p.max() <= 1
        big = cal.probability(grid, articles=400, method=method)
        assert np.all(big <= p + 1e-12)  # more unrelated articles: each high score less sure
    odds = lambda q: q / (1 - q)  # noqa: E731
    p, big = cal.probability(0.9, method="platt"), cal.probability(0.9, articles=79, method="platt")
    assert odds(big) == pytest.approx(odds(p) * 39 / 78)
    assert cal.threshold(0.9, articles=400) >= cal.threshold(0.9)
    classes = Calibration.from_state({**cal.state(), "products": False})
    assert classes.probability(0.9, articles=400) == pytest.approx(cal.probability(0.9))


def test_ece_and_state_round_trip():
    prob = np.array([0.05, 0.05, 0.95, 0.95])
    assert ece(prob, np.array([0, 0, 1, 1])) == pytest.approx(0.05)
    assert ece(np.array([0.5, 0.5]), np.array([1, 1])) == pytest.approx(0.5)
    vectors, labels = _grouped()
    cal = fit_scores(vectors @ vectors.T, labels, [f"a{i}" for i in range(len(labels))], products=True)
    again = Calibration.from_state(cal.state())
    assert again.probability(0.7) == cal.probability(0.7) and again.thresholds() == cal.thresholds()
    assert cal.method in ("isotonic", "platt") and set(cal.crossfit["ece"]) == {"isotonic", "platt"}


def test_crossfit_needs_both_kinds_of_pairs():
    with pytest.raises(SetencError, match="both same-group and other pairs"):
        fit(np.array([0.1, 0.2]), np.array([False, False]), 3, True)
    S = np.eye(4)
    assert crossfit(S, ["a", "b", "c", "d"], list("wxyz"), True) == {}


def _naive_average(S: np.ndarray, t: float) -> set[frozenset]:
    W = np.where(S >= t, S, 0.0)
    clusters = [[i] for i in range(len(S))]
    while True:
        best, pair = -np.inf, None
        for x, y in itertools.combinations(range(len(clusters)), 2):
            link = W[np.ix_(clusters[x], clusters[y])].mean()
            if link > best:
                best, pair = link, (x, y)
        if pair is None or best < t:
            return {frozenset(c) for c in clusters}
        x, y = pair
        clusters[x] += clusters[y]
        del clusters[y]


def _naive_components(S: np.ndarray, t: float) -> set[frozenset]:
    label = list(range(len(S)))
    for i, j in itertools.combinations(range(len(S)), 2):
        if S[i, j] >= t and label[i] != label[j]:
            old = label[j]
            label = [label[i] if x == old else x for x in label]
    return {frozenset(np.flatnonzero(np.array(label) == x)) for x in set(label)}


def _sets(c) -> set[frozenset]:
    return {frozenset(g.tolist()) for g in c.groups()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clusters_equal_brute_force_on_random_sets(seed):
    vectors, _ = _grouped(n_groups=8, per=4, noise=1.0, seed=seed)
    S = vectors @ vectors.T
    for t in (0.3, 0.5, 0.7):
        edges = vector_edges(vectors, t)  # FAISS range search
        dense = score_edges(S, t)
        assert sorted(zip(edges[0], edges[1])) == sorted(zip(dense[0], dense[1]))
        assert _sets(cluster(edges, len(S), t, "average")) == _naive_average(S, t)
        assert _sets(cluster(edges, len(S), t, "components")) == _naive_components(S, t)


def test_average_linkage_does_not_chain():
    # a-b, b-c, c-d each close, a-c / b-d / a-d unrelated: components join all four, average linkage does not
    S = np.eye(4)
    for i in range(3):
        S[i, i + 1] = S[i + 1, i] = 0.9
    edges = score_edges(S, 0.8)
    assert _sets(cluster(edges, 4, 0.8, "components")) == {frozenset(range(4))}
    avg = cluster(edges, 4, 0.8, "average")
    assert len(avg.groups()) == 2 and np.nanmin(avg.weakest) == pytest.approx(0.9)


def test_topk_candidates_equal_range_search():
    vectors, _ = _grouped(n_groups=10, per=5, noise=0.5, seed=3)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    exact = range_hits(flat, vectors, 0.4)
    topk = range_hits(flat, vectors, 0.4, k=2)  # doubles k until each query's list is complete
    for (r1, s1), (r2, s2) in zip(exact, topk):
        assert sorted(r1.tolist()) == sorted(r2.tolist())


def test_pair_counts_match_enumerated_pairs():
    rng = np.random.default_rng(4)
    pred, truth = rng.integers(0, 5, 40), rng.integers(0, 6, 40)
    pairs = list(itertools.combinations(range(40), 2))
    same_p = {(i, j) for i, j in pairs if pred[i] == pred[j]}
    same_t = {(i, j) for i, j in pairs if truth[i] == truth[j]}
    m = pair_counts(pred, truth)
    assert m["precision"] == pytest.approx(len(same_p & same_t) / len(same_p))
    assert m["recall"] == pytest.approx(len(same_p & same_t) / len(same_t))
    assert m["pairs"] == len(same_p)


def test_all_pairs_labels():
    s, same = all_pairs(np.arange(9.0).reshape(3, 3), ["x", "y", "x"])
    assert s.tolist() == [1.0, 2.0, 5.0] and same.tolist() == [False, True, False]


def test_photo_pairs_equal_hand_computed_assignment():
    rng = np.random.default_rng(5)
    a, b = _unit(rng.normal(size=(3, 6))), _unit(rng.normal(size=(4, 6)))
    S = a.astype(np.float64) @ b.T.astype(np.float64)
    best = max(itertools.permutations(range(4), 3), key=lambda cols: sum(S[i, c] for i, c in enumerate(cols)))
    want = sorted(((i, c, S[i, c]) for i, c in enumerate(best)), key=lambda x: -x[2])
    got = photo_pairs(a, b)
    assert [(p.a, p.b) for p in got] == [(i, c) for i, c, _ in want]
    assert [p.cosine for p in got] == pytest.approx([v for *_, v in want], abs=1e-6)
    r, c = linear_sum_assignment(S, maximize=True)
    assert {(p.a, p.b) for p in got} == set(zip(r.tolist(), c.tolist()))
    chamfer = photo_pairs(a, b, "chamfer")
    assert {(p.a, p.b) for p in chamfer} == ({(i, int(S[i].argmax())) for i in range(3)}
                                             | {(int(S[:, j].argmax()), j) for j in range(4)})


def test_photo_pairs_collapse_elements_and_refuse_bad_input():
    a = _unit(np.eye(4)[[0, 1, 2, 3]])  # 2 photos x 2 TTA elements
    pairs = photo_pairs(a, a, per_photo=2)
    assert {(p.a, p.b) for p in pairs} == {(0, 0), (1, 1)}
    with pytest.raises(SetencError, match="non-empty"):
        photo_pairs(np.zeros((0, 4)), a)
    with pytest.raises(SetencError, match="how="):
        photo_pairs(a, a, how="best")


def test_precision_caution_speaks_only_when_the_crossfit_missed():
    from setenc.matching.dedup import precision_caution

    rng = np.random.default_rng(3)
    scores = rng.random(200)
    cal = fit(scores, rng.random(200) < scores ** 2, articles=20, products=True)
    assert precision_caution(cal, 0.9) is None  # no cross-fitted check recorded: nothing to say
    cal.crossfit = {"0.9": {"pair_precision": 0.87}, "0.8": {"pair_precision": 0.71}, "0.95": {"pair_precision": np.nan}}
    assert precision_caution(cal, 0.9) is None  # within 0.05
    assert "reached 0.710" in precision_caution(cal, 0.8)
    assert "selected no pair" in precision_caution(cal, 0.95)
    assert precision_caution(cal, 0.7) is None  # a precision the check did not measure
