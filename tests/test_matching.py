"""Matchers: the seed article's worked example, brute-force references, batched = single-pair, invariances."""

import itertools

import numpy as np
import pytest
import torch

from setenc.plumbing.errors import SetencError
from setenc.evaluation.tuning import tune_matcher
from setenc.matching.matchers import create_matcher, list_matchers, pairwise_scores
from setenc.evaluation.metrics import retrieval_metrics

WORKED = np.array([
    [0.837, 0.835, 0.747, 0.703, 0.698],
    [0.803, 0.799, 0.838, 0.760, 0.769],
    [0.772, 0.752, 0.794, 0.761, 0.796],
    [0.787, 0.785, 0.794, 0.866, 0.881],
])
ALL = ["mean", "chamfer", "recursive", "linear", "ordered"]


def unit(rng, *shape):
    x = rng.standard_normal(shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def brute_force_assignment(S):
    """Best total similarity over every one-to-one pairing of the smaller side into the larger."""
    n, m = S.shape
    if n <= m:
        return max(sum(S[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))
    return brute_force_assignment(S.T)


def random_batch(rng, sizes, dim=6, n_tags=3):
    """Sets of the given (n, m) sizes padded at random positions with NaN photos, plus random view tags."""
    B = len(sizes)
    N, M = max(n for n, _ in sizes), max(m for _, m in sizes)
    S = np.full((B, N, M), np.nan)
    rm, cm = np.zeros((B, N), bool), np.zeros((B, M), bool)
    rv, cv = rng.integers(0, n_tags, (B, N)), rng.integers(0, n_tags, (B, M))  # padding gets real-looking tags
    pairs = []
    for b, (n, m) in enumerate(sizes):
        rows, cols = np.sort(rng.choice(N, n, replace=False)), np.sort(rng.choice(M, m, replace=False))
        a, c = unit(rng, n, dim), unit(rng, m, dim)
        S[b][np.ix_(rows, cols)] = a @ c.T
        rm[b, rows], cm[b, cols] = True, True
        rv[b, rows], cv[b, cols] = rng.integers(-1, n_tags, n), rng.integers(-1, n_tags, m)
        pairs.append((a, c, rv[b, rows], cv[b, cols]))
    tensors = [torch.from_numpy(v) for v in (S, rm, cm, rv, cv)]
    return tensors, pairs


def test_registry():
    assert list_matchers() == ["mean", "chamfer", "recursive", "linear", "ordered"]  # report order
    with pytest.raises(SetencError, match="recursive"):
        create_matcher("hungarian")
    with pytest.raises(SetencError, match="has no option s"):
        create_matcher("mean", s=0.5)
    with pytest.raises(SetencError, match="threshold"):
        create_matcher("recursive", s=2.0)
    with pytest.raises(SetencError, match="positive"):
        create_matcher("linear", m=0)


def test_recursive_worked_example():
    matcher = create_matcher("recursive")
    assert matcher.match(WORKED) == [(3, 4, 0.881), (1, 2, 0.838), (0, 0, 0.837), (2, 3, 0.761)]
    assert round(matcher.score(WORKED), 3) == 0.829
    assert sorted(j for _, j, _ in matcher.match(WORKED)) == [0, 2, 3, 4]  # column 1 (0.835 ...) stays unmatched
    S = torch.from_numpy(WORKED)[None]
    got = matcher.score_batch(S, torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool))
    assert got.item() == pytest.approx((0.881 + 0.838 + 0.837 + 0.761) / 4)


def test_recursive_s_and_m():
    def score(**kw):
        return create_matcher("recursive", **kw).score(WORKED)

    assert score(s=0.8) == pytest.approx((0.881 + 0.838 + 0.837) / 3)
    assert score(m=2) == pytest.approx((0.881 + 0.838) / 2)
    assert score(s=0.838, m=3) == pytest.approx((0.881 + 0.838) / 2)
    assert score(s=0.9) == pytest.approx(0.881)  # nothing counts: the best similarity, below s
    assert create_matcher("recursive", s=0.9).match(WORKED) == []
    assert create_matcher("recursive", m=1).match(WORKED) == [(3, 4, 0.881)]
    # monotone: a pair with a counted match outranks every pair without one
    weak = np.array([[0.85, 0.2], [0.1, 0.84]])
    strong = np.array([[0.86, 0.0], [0.0, -0.5]])
    assert score(s=0.855) == pytest.approx(0.881)
    assert create_matcher("recursive", s=0.855).score(strong) > create_matcher("recursive", s=0.855).score(weak)


def test_linear_worked_example():
    matcher = create_matcher("linear")
    matches = matcher.match(WORKED)
    assert sorted((i, j) for i, j, _ in matches) == [(0, 0), (1, 2), (2, 4), (3, 3)]
    sims = [v for _, _, v in matches]
    assert sims == sorted(sims, reverse=True)
    assert round(matcher.score(WORKED), 3) == 0.834 and min(sims) == 0.796
    assert create_matcher("linear", s=0.8).score(WORKED) == pytest.approx((0.866 + 0.838 + 0.837) / 3)
    assert create_matcher("linear", m=1).score(WORKED) == pytest.approx(0.866)
    assert create_matcher("linear", s=0.9).score(WORKED) == pytest.approx(0.866)


@pytest.mark.parametrize("seed", range(4))
def test_linear_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    matcher = create_matcher("linear")
    for _ in range(15):
        n, m = rng.integers(1, 6, size=2)
        for S in (rng.uniform(-1, 1, (n, m)), rng.integers(0, 3, (n, m)) / 2.0):  # continuous, then many ties
            assert matcher.score(S) * min(n, m) == pytest.approx(brute_force_assignment(S))
            assert len(matcher.match(S)) == min(n, m)


def test_ordered_by_hand():
    S = np.array([[0.9, 0.2, 0.5], [0.3, 0.8, 0.1], [0.6, 0.4, 0.7]])
    matcher = create_matcher("ordered")
    # front: S[0, 0]; back: S[1, 1]; 'top' is on one side only
    assert matcher.score(S, ["front", "back", "top"], ["front", "back", "side"]) == pytest.approx(0.85)
    # a repeated tag counts once, by its best pair: front = max(S[0,0], S[2,0]) = 0.9, back = 0.8
    assert matcher.score(S, ["front", "back", "front"], ["front", "back", None]) == pytest.approx(0.85)
    # int tags, −1 = none: tag 0 = max(S[0, 2], S[2, 2]) = 0.7, tag 1 = S[1, 0] = 0.3
    assert matcher.score(S, [0, 1, 0], [1, -1, 0]) == pytest.approx(0.5)
    assert matcher.score(S, ["a", "b", "c"], ["d", "e", "f"]) == pytest.approx(S.mean())  # nothing shared
    assert matcher.score(S) == pytest.approx(S.mean())


def test_mean_and_chamfer_by_hand():
    rng = np.random.default_rng(0)
    a, b = unit(rng, 3, 5), unit(rng, 4, 5)
    S = a @ b.T
    cosine = a.mean(0) @ b.mean(0) / np.linalg.norm(a.mean(0)) / np.linalg.norm(b.mean(0))
    mean = create_matcher("mean")
    assert mean.score(S, row_norm=np.linalg.norm(a.mean(0)), col_norm=np.linalg.norm(b.mean(0))) == pytest.approx(
        cosine)
    assert mean.score(S) == pytest.approx(a.mean(0) @ b.mean(0))
    chamfer = np.mean([S[i].max() for i in range(3)]) / 2 + np.mean([S[:, j].max() for j in range(4)]) / 2
    assert create_matcher("chamfer").score(S) == pytest.approx(chamfer)
    rows, cols = (0.837 + 0.838 + 0.796 + 0.881) / 4, (0.837 + 0.835 + 0.838 + 0.866 + 0.881) / 5
    assert create_matcher("chamfer").score(WORKED) == pytest.approx(0.5 * (rows + cols))


@pytest.mark.parametrize("name, kw", [(name, {}) for name in ALL] + [
    (name, kw) for name in ("recursive", "linear") for kw in ({"s": 0.1, "m": 2}, {"s": 0.5}, {"m": 1})])
def test_batched_equals_single(name, kw):
    rng = np.random.default_rng(len(name))
    sizes = [(1, 1), (1, 5), (5, 1), (3, 4), (6, 6), (2, 6), (6, 3), (4, 4)] + \
        [tuple(rng.integers(1, 7, size=2)) for _ in range(16)]
    (S, rm, cm, rv, cv), pairs = random_batch(rng, sizes)
    matcher = create_matcher(name, **kw)
    got = matcher.score_batch(S, rm, cm, rv, cv)
    want = [matcher.score(a @ c.T, va, vc) for a, c, va, vc in pairs]
    assert got.dtype == S.dtype and got.shape == (len(sizes),)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    # float32 and no views still work; ties (integer matrices) break the same way in both forms
    assert matcher.score_batch(S.float(), rm, cm).dtype == torch.float32
    ties = torch.from_numpy(rng.integers(0, 3, S.shape) / 2.0)
    tie_want = [matcher.score(ties[b][rm[b]][:, cm[b]].numpy()) for b in range(len(sizes))]
    np.testing.assert_allclose(matcher.score_batch(ties, rm, cm).numpy(), tie_want, atol=1e-12)


def test_mean_batched_with_norms():
    rng = np.random.default_rng(1)
    (S, rm, cm, _, _), pairs = random_batch(rng, [(1, 3), (4, 2), (5, 5)])
    row_norm = torch.tensor([np.linalg.norm(a.mean(0)) for a, _, _, _ in pairs])
    col_norm = torch.tensor([np.linalg.norm(c.mean(0)) for _, c, _, _ in pairs])
    want = [a.mean(0) @ c.mean(0) / (np.linalg.norm(a.mean(0)) * np.linalg.norm(c.mean(0))) for a, c, _, _ in pairs]
    got = create_matcher("mean").score_batch(S, rm, cm, row_norm=row_norm, col_norm=col_norm)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_permutation_invariance(name):
    rng = np.random.default_rng(7)
    S = unit(rng, 5, 8) @ unit(rng, 4, 8).T
    rv, cv = [0, 1, 2, 0, -1], [2, 0, 1, 1]
    pr, pc = rng.permutation(5), rng.permutation(4)
    matcher = create_matcher(name)
    base = matcher.score(S, rv, cv)
    assert matcher.score(S[pr][:, pc], [rv[i] for i in pr], [cv[j] for j in pc]) == pytest.approx(base)
    if name in ("recursive", "linear"):
        assert sorted(matcher.match(S)) == sorted(
            (int(pr[i]), int(pc[j]), v) for i, j, v in matcher.match(S[pr][:, pc]))


@pytest.mark.parametrize("name", ALL)
def test_pairwise_scores_equals_double_loop(name):
    rng = np.random.default_rng(3)
    q_sizes, g_sizes = [1, 3, 5], [2, 1, 4, 5, 3, 1, 2]
    q_sets = [unit(rng, n, 8) for n in q_sizes]
    g_sets = [unit(rng, n, 8) for n in g_sizes]
    q_tags = [rng.integers(-1, 3, n) for n in q_sizes]
    g_tags = [rng.integers(-1, 3, n) for n in g_sizes]

    def pad(sets, tags):
        x = np.full((len(sets), 5, 8), np.nan)
        mask, views = np.zeros((len(sets), 5), bool), np.zeros((len(sets), 5), int)
        for b, (s, t) in enumerate(zip(sets, tags)):
            x[b, :len(s)], mask[b, :len(s)], views[b, :len(s)] = s, True, t
        return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(views)

    (qx, qm, qv), (gx, gm, gv) = pad(q_sets, q_tags), pad(g_sets, g_tags)
    matcher = create_matcher(name)
    got = pairwise_scores(matcher, qx, qm, gx, gm, qv, gv, chunk=4)  # blocks smaller than a query row
    assert got.shape == (3, 7)
    for q, (a, ta) in enumerate(zip(q_sets, q_tags)):
        for g, (c, tc) in enumerate(zip(g_sets, g_tags)):
            if name == "mean":
                want = a.mean(0) @ c.mean(0) / (np.linalg.norm(a.mean(0)) * np.linalg.norm(c.mean(0)))
            else:
                want = matcher.score(a @ c.T, ta, tc)
            assert got[q, g].item() == pytest.approx(want, abs=1e-12)
    np.testing.assert_allclose(pairwise_scores(name, qx, qm, gx, gm, qv, gv).numpy(), got.numpy(), atol=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_scores_in_range(name):
    rng = np.random.default_rng(5)
    x = torch.from_numpy(unit(rng, 6, 4, 3)).float()  # small dim: strongly (anti-)correlated photos
    x[1] = x[1, :1]  # a set of one photo repeated: self-similarity exactly 1
    mask = torch.ones(6, 4, dtype=torch.bool)
    scores = pairwise_scores(name, x, mask, torch.cat([x, -x]), torch.cat([mask, mask]))
    assert scores.min() >= -1 and scores.max() <= 1
    assert scores[1, 1] == pytest.approx(1.0, abs=1e-6) and scores[1, 7] == pytest.approx(-1.0, abs=1e-6)


def test_empty_sets_are_errors():
    with pytest.raises(SetencError, match="without photos"):
        create_matcher("recursive").score(np.zeros((0, 3)))
    x, mask = torch.zeros(2, 3, 4), torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(SetencError, match=r"query sets: empty set at batch index 1"):
        pairwise_scores("chamfer", x, mask, x[:1], mask[:1])
    with pytest.raises(SetencError, match="empty set"):
        create_matcher("linear").score_batch(torch.zeros(2, 3, 3), mask, mask)


def test_tune_matcher():
    rng = np.random.default_rng(11)
    protos = unit(rng, 4, 3, 16)  # 4 products, 3 views each
    sets, labels = [], []
    for label in range(4):
        for _ in range(4):
            photos = protos[label] + 0.8 * rng.standard_normal((3, 16))
            sets.append(photos / np.linalg.norm(photos, axis=-1, keepdims=True))
            labels.append(label)
    x, mask = torch.from_numpy(np.stack(sets)), torch.ones(16, 3, dtype=torch.bool)
    ignore = np.eye(16, dtype=bool)
    s_grid, m_grid = [None, 0.2, 0.5], [None, 1, 2]
    for name in ("recursive", "linear"):
        best, rows = tune_matcher(name, x, mask, x, mask, labels, labels, s_grid, m_grid, ignore=ignore, chunk=7)
        assert [(r["s"], r["m"]) for r in rows] == list(itertools.product(s_grid, m_grid))
        for row in rows:  # the shortcut equals scoring each grid point from scratch
            scores = pairwise_scores(create_matcher(name, s=row["s"], m=row["m"]), x, mask, x, mask)
            want = retrieval_metrics(scores.numpy(), labels, labels, ignore=ignore)
            assert {k: row[k] for k in want} == pytest.approx(want)
        key = [(r["map@r"], r["recall@1"]) for r in rows]
        first_best = rows[key.index(max(key))]
        assert best == {"s": first_best["s"], "m": first_best["m"]}
    with pytest.raises(SetencError, match="no s / m"):
        tune_matcher("chamfer", x, mask, x, mask, labels, labels, [None], [None])
