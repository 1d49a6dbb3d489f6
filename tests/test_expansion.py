"""Neighbour expansion (DBA + αQE) against a naive per-query reference, and its place in metrics and search."""

import numpy as np
import pytest

from setenc.evaluation.metrics import retrieval_metrics, vector_metrics
from setenc.plumbing.errors import SetencError
from setenc.search.expansion import DEFAULT_EXPANSION, Expansion, expanded_scores, self_neighbours


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def naive_scores(q, g, exp: Expansion, own: int) -> np.ndarray:
    """One query, its own gallery position `own` (−1: none) removed from the gallery before anything is computed."""
    keep = [j for j in range(len(g)) if j != own]
    gg = g[keep]
    aug = []
    for j in range(len(gg)):
        s = gg @ gg[j]
        s[j] = -np.inf
        nb = np.argsort(-s, kind="stable")[:exp.gallery]
        w = np.clip(s[nb], 0, None) ** exp.alpha
        aug.append(unit(gg[j] + (w[:, None] * gg[nb]).sum(0)))
    aug = np.array(aug)
    s = aug @ q
    if exp.query:
        top = np.argsort(-s, kind="stable")[:exp.query]
        qq = unit(q + ((np.clip(s[top], 0, None) ** exp.alpha)[:, None] * aug[top]).sum(0))
        s = aug @ qq
    out = np.full(len(g), np.nan)
    out[keep] = s
    return out


@pytest.mark.parametrize("exp", [Expansion(2, 0), Expansion(0, 2), Expansion(3, 2), Expansion(1, 1, 1.0)])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_expanded_scores_match_the_naive_reference(exp, leave_one_out):
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(4, 16)))
    g = unit(centres[rng.integers(0, 4, 30)] + 0.6 * rng.normal(size=(30, 16))).astype(np.float32)
    if leave_one_out:  # the queries are gallery articles: each must be left out of its own gallery's augmentation
        q, exclude = g[:12], np.arange(12)
    else:
        q, exclude = unit(centres[rng.integers(0, 4, 12)] + 0.6 * rng.normal(size=(12, 16))).astype(np.float32), None
    got = np.concatenate([s for _, s in expanded_scores(q, g, exp, exclude, block=64)])  # several blocks
    for i in range(len(q)):
        want = naive_scores(q[i], g, exp, -1 if exclude is None else int(exclude[i]))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[i, ok], want[ok], atol=1e-5)


def test_self_neighbours_put_each_row_first_then_the_nearest():
    rng = np.random.default_rng(1)
    v = unit(rng.normal(size=(20, 8))).astype(np.float32)
    v[5] = v[4]  # a duplicate must not displace the row itself from the first column
    idx, sims = self_neighbours(v, 3, block=40)
    assert (idx[:, 0] == np.arange(20)).all() and np.allclose(sims[:, 0], 1.0)
    s = v @ v.T
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_allclose(np.sort(sims[:, 1:], 1), np.sort(np.sort(s, 1)[:, -3:], 1), atol=1e-6)


def test_vector_metrics_rank_the_expanded_scores():
    rng = np.random.default_rng(2)
    centres = unit(rng.normal(size=(5, 16)))
    labels = rng.integers(0, 5, 40)
    g = unit(centres[labels] + 0.8 * rng.normal(size=(40, 16))).astype(np.float32)
    q, exclude = g[:15], np.arange(15)
    s = np.concatenate([b for _, b in expanded_scores(q, g, DEFAULT_EXPANSION, exclude)])
    ignore = np.zeros(s.shape, bool)
    ignore[np.arange(15), exclude] = True
    s[ignore] = 0.0
    want = retrieval_metrics(s, labels[:15], labels, ignore=ignore, bootstrap=0)
    got = vector_metrics(q, g, labels[:15], labels, exclude=exclude, bootstrap=0, expansion=DEFAULT_EXPANSION)
    assert got["map@r"] == pytest.approx(want["map@r"]) and got["recall@1"] == pytest.approx(want["recall@1"])
    plain = vector_metrics(q, g, labels[:15], labels, exclude=exclude, bootstrap=0)
    assert got["map@r"] != plain["map@r"]  # the expansion changed the ranking on these clustered vectors


def test_parse_and_name_round_trip():
    assert Expansion.parse("dba5+qe2") == Expansion(5, 2, 3.0) == DEFAULT_EXPANSION
    assert Expansion.parse("DBA8") == Expansion(8, 0)
    assert Expansion.parse("qe1+a2") == Expansion(0, 1, 2.0)
    for e in (Expansion(5, 2), Expansion(8, 0), Expansion(0, 1, 2.0)):
        assert Expansion.parse(e.name) == e
    assert Expansion.parse("none") is None and Expansion.parse(None) is None and Expansion.parse("dba0") is None
    with pytest.raises(SetencError, match="dba<k>"):
        Expansion.parse("dba-1")
    with pytest.raises(SetencError, match=">= 0"):
        Expansion(-1, 2)


def test_an_export_searches_expanded_as_the_reference_ranks(fake_backbone, tmp_path):
    from setenc.encoder import SetEncoder
    from setenc.search.index import SetIndex, export_index
    from test_index import colour_catalog

    enc = SetEncoder.parameter_free(fake_backbone)
    m = export_index(enc, colour_catalog(tmp_path, 30), tmp_path / "cache", tmp_path / "idx", progress=False)
    assert m["expansion"] == DEFAULT_EXPANSION.name  # a parameter-free head: the products' default
    idx = SetIndex.load(tmp_path / "idx")
    assert idx.expansion == DEFAULT_EXPANSION
    g = np.asarray(idx.vectors, np.float32)
    q = unit(g[[0, 7]] + 0.3 * np.random.default_rng(0).normal(size=(2, g.shape[1]))).astype(np.float32)
    ids, scores = idx.search_batch(q, k=6)
    want = np.concatenate([s for _, s in expanded_scores(q, g, DEFAULT_EXPANSION)])
    for i in range(2):
        order = np.argsort(-want[i], kind="stable")[:6]
        assert list(ids[i]) == [idx.ids[r] for r in order]
        np.testing.assert_allclose(scores[i], want[i, order], atol=1e-5)
    plain = SetIndex.load(tmp_path / "idx", expansion="none")
    ids0, scores0 = plain.search_batch(q, k=6)
    np.testing.assert_allclose(scores0, np.sort(q @ g.T, axis=1)[:, ::-1][:, :6], atol=1e-5)  # exact cosines
    hits = idx.similar("a3", k=5)
    assert len(hits) == 5 and "a3" not in [i for i, _ in hits]
    with pytest.raises(SetencError, match="dba<k>"):
        SetIndex.load(tmp_path / "idx", expansion="dba5+qe")


def test_the_rule_expands_by_kind_and_articles_per_group(fake_backbone):
    from setenc.catalogs import Article, Catalog
    from setenc.encoder import SetEncoder
    from setenc.search.expansion import CLASS_EXPANSION, articles_per_group, expansion_for

    def catalog(per_group: int, groups: int = 4) -> Catalog:
        return Catalog([Article(f"a{i}", ("x.jpg",), f"g{i % groups}") for i in range(per_group * groups)], None)

    enc = SetEncoder.parameter_free(fake_backbone)
    assert expansion_for(enc) == DEFAULT_EXPANSION  # nothing known: products with several listings
    assert articles_per_group(catalog(6)) == 6.0 and expansion_for(enc, catalog(6)) == DEFAULT_EXPANSION
    assert expansion_for(enc, catalog(1)) is None  # one article a product: its neighbours are other products
    enc.training_info = {"split_by": "group", "articles_per_group": 1.5}
    assert expansion_for(enc) is None and expansion_for(enc, catalog(6)) == DEFAULT_EXPANSION  # the catalogue's wins
    unlabelled = Catalog([Article(f"a{i}", ("x.jpg",)) for i in range(8)], None)
    assert articles_per_group(unlabelled) is None and expansion_for(enc, unlabelled) is None  # the checkpoint's then
    enc.training_info = {"split_by": "article"}
    assert expansion_for(enc, catalog(1)) == CLASS_EXPANSION == Expansion(0, 2)
    enc.fusion = object()
    assert expansion_for(enc) is None
