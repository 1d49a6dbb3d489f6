"""Training pairs and padding: disjoint subsets, group partners, explicit pairs, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from setenc.catalogs import Article, Catalog
from setenc.training.pairs import PairDataset, augment, collate_pairs, pad_sets, split_photos


def _catalog(groups, sizes, pairs=None, sessions=None):
    sessions = sessions or [None] * len(groups)
    arts = [Article(f"a{i}", tuple(f"/x/{i}_{k}.jpg" for k in range(n)), g, meta={"session": s} if s else {})
            for i, (g, n, s) in enumerate(zip(groups, sizes, sessions))]
    return Catalog(arts, root=None, pairs=pairs)


def _sets(sizes, d=4):
    # photo k of article i is the vector [i, k, 0, ...] so tests can tell where every row came from
    return [np.array([[i, k] + [0] * (d - 2) for k in range(n)], np.float32) for i, n in enumerate(sizes)]


def test_pad_sets_shapes_and_mask():
    x, mask = pad_sets([np.ones((2, 3)), np.ones((4, 3))])
    assert x.shape == (2, 4, 3) and mask.tolist() == [[True, True, False, False], [True] * 4]
    assert torch.all(x[0, 2:] == 0)
    with pytest.raises(ValueError, match="set 1"):
        pad_sets([np.ones((2, 3)), np.ones((0, 3))])


@pytest.mark.parametrize("max_len", [None, 1, 3, 7])
def test_pad_sets_numpy_fast_path_equals_tensor_path(max_len):
    """NumPy sets take a one-scatter path; it must pad, truncate and mask exactly like the per-set tensor copy."""
    rng = np.random.default_rng(0)
    sets = [rng.standard_normal((n, 3)).astype(dt) for n, dt in zip([2, 5, 1, 4], [np.float32, np.float64] * 2)]
    fast = pad_sets(sets, max_len)
    ref = pad_sets([torch.as_tensor(s) for s in sets], max_len)
    assert fast[0].dtype == torch.float32 and torch.equal(fast[0], ref[0]) and torch.equal(fast[1], ref[1])


def test_split_photos_disjoint_and_complete():
    rng = np.random.default_rng(0)
    s = _sets([6])[0]
    for _ in range(20):
        a, b = split_photos(s, rng)
        ka, kb = set(a[:, 1]), set(b[:, 1])
        assert ka and kb and not ka & kb and ka | kb == set(range(6))


def test_augment_keeps_at_least_one_and_caps():
    rng = np.random.default_rng(0)
    s = _sets([10])[0]
    for _ in range(50):
        out = augment(s, rng, max_photos=4, dropout=0.9)
        assert 1 <= len(out) <= 4 and len(set(out[:, 1])) == len(out)


def test_group_pairs_come_from_the_group_and_labels_match():
    cat = _catalog(["g0", "g0", "g1", "g1", None], [1, 1, 1, 1, 1])
    ds = PairDataset(_sets([1] * 5), cat, mode="auto", dropout=0)
    assert len(ds) == 4  # the single-photo article without a group has no positive
    for k in range(len(ds)):
        a, b, y = ds[k]
        i, j = int(a[0, 0]), int(b[0, 0])
        assert i != j and cat[i].group == cat[j].group and ds.labels[i] == y


def test_subset_mode_pairs_are_disjoint_photos_of_one_article():
    cat = _catalog([None, None], [5, 3])
    ds = PairDataset(_sets([5, 3]), cat, mode="subsets", dropout=0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for k in range(len(ds)):
            a, b, _ = ds[k]
            assert set(a[:, 0]) == set(b[:, 0]) and not set(a[:, 1]) & set(b[:, 1])


def test_label_free_catalogue_trains_on_two_subsets_each_its_own_label():
    """No group, no pairs.csv (a user without labels): `auto` falls back to two disjoint subsets of one article, and
    every article is its own label, so no two articles are ever treated as one product."""
    cat = _catalog([None, None, None, None], [4, 2, 1, 3])
    ds = PairDataset(_sets([4, 2, 1, 3]), cat, mode="auto", dropout=0)
    assert ds.anchors == [0, 1, 3]  # a one-photo article cannot be split into two
    assert len(set(ds.labels)) == 4
    for epoch in range(5):
        ds.set_epoch(epoch)
        for k, i in enumerate(ds.anchors):
            a, b, y = ds[k]
            assert set(a[:, 0]) == set(b[:, 0]) == {i} and not set(a[:, 1]) & set(b[:, 1]) and y == ds.labels[i]


def test_unlabelled_mode_ignores_groups_and_pairs_where_they_exist():
    """`positives=unlabelled` trains a labelled catalogue as if it had no labels (the label-free measurement): only
    subsets of one article, every article its own label even when two share a group or a pairs.csv line."""
    cat = _catalog(["g", "g", "g", None], [3, 2, 1, 2], pairs=[("a0", "a3")])
    ds = PairDataset(_sets([3, 2, 1, 2]), cat, mode="unlabelled", dropout=0)
    auto = PairDataset(_sets([3, 2, 1, 2]), cat, mode="auto", dropout=0)
    assert auto.labels[0] == auto.labels[1] and 2 in auto.anchors  # the labels exist and auto uses them
    assert ds.anchors == [0, 1, 3] and len(set(ds.labels)) == 4
    for epoch in range(5):
        ds.set_epoch(epoch)
        for k, i in enumerate(ds.anchors):
            a, b, _ = ds[k]
            assert set(a[:, 0]) == set(b[:, 0]) == {i}


def test_explicit_pairs():
    cat = _catalog([None, None, None], [1, 1, 1], pairs=[("a0", "a2")])
    ds = PairDataset(_sets([1, 1, 1]), cat, mode="pairs")
    got = {(int(a[0, 0]), int(b[0, 0])) for a, b, _ in (ds[k] for k in range(len(ds)))}
    assert got == {(0, 2), (2, 0)}


def test_sampling_is_deterministic_and_changes_with_epoch():
    cat = _catalog(["g"] * 4, [4, 4, 4, 4])
    ds1, ds2 = PairDataset(_sets([4] * 4), cat, seed=3), PairDataset(_sets([4] * 4), cat, seed=3)
    draw = lambda ds: [tuple(map(tuple, ds[k][0])) for k in range(len(ds))]  # noqa: E731
    assert draw(ds1) == draw(ds2)
    ds2.set_epoch(1)
    assert draw(ds1) != draw(ds2)


def test_no_positives_is_a_clear_error():
    with pytest.raises(ValueError, match="no positive pairs"):
        PairDataset(_sets([1, 1]), _catalog([None, None], [1, 1]))


def test_collate_pairs():
    cat = _catalog(["g", "g"], [3, 2])
    ds = PairDataset(_sets([3, 2]), cat, dropout=0)
    xa, ma, xb, mb, y = collate_pairs([ds[0], ds[1]])
    assert xa.shape[0] == 2 and ma.dtype == torch.bool and y.tolist() == [ds.labels[0], ds.labels[1]]


def test_cross_session_partners_come_from_another_session_when_there_is_one():
    # g: a0, a1 in session A, a2 in B -> a0 and a1 always pair with a2, a2 with either; h: one session only
    cat = _catalog(["g", "g", "g", "h", "h"], [1] * 5, sessions=["A", "A", "B", "A", "A"])
    expected = {True: {0: {2}, 1: {2}, 2: {0, 1}, 3: {4}, 4: {3}},
                False: {0: {1, 2}, 1: {0, 2}, 2: {0, 1}, 3: {4}, 4: {3}}}
    for cross, want in expected.items():
        ds = PairDataset(_sets([1] * 5), cat, mode="group", dropout=0, cross_session=cross)
        got: dict[int, set] = {i: set() for i in range(5)}
        for epoch in range(30):
            ds.set_epoch(epoch)
            for k in range(len(ds)):
                a, b, _ = ds[k]
                got[int(a[0, 0])].add(int(b[0, 0]))
        assert got == want
