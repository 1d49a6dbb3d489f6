"""The article's experiments: the worked example against a brute-force optimum, precision@k by hand, the
validation split, the view / object helpers, and each figure on tiny inputs."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from setenc_experiments.seed_article import WORKED_MATRIX, chance_precision, precision_at_k, reproduce, worked_example
from setenc_experiments.seed_article.common import leave_one_out, matcher_scores, split_queries
from setenc_experiments.seed_article.figures import distance_matrix, matching_comparison, method_bars, view_table
from setenc_experiments.seed_article.fusion import compare
from setenc_experiments.seed_article.ordered import LUMA_VIEWS, eth_objects, luma_views
from setenc.catalogs import Article, Catalog

from conftest import write_photos


def test_worked_example_greedy_and_hungarian(tmp_path):
    res = worked_example(tmp_path)
    rec, lin = res["recursive"], res["linear"]
    assert [v for _, _, v in rec["picks"]] == [0.881, 0.838, 0.837, 0.761]  # the article's greedy, in pick order
    assert round(rec["mean"], 3) == 0.829 and rec["worst"] == 0.761 and rec["total"] == pytest.approx(3.317)
    assert sorted((i, j) for i, j, _ in lin["picks"]) == [(0, 0), (1, 2), (2, 4), (3, 3)]
    assert sorted(v for _, _, v in lin["picks"]) == [0.796, 0.837, 0.838, 0.866]
    assert round(lin["mean"], 3) == 0.834 and lin["worst"] == 0.796 and lin["total"] == pytest.approx(3.337)
    # naive reference: the best total over every one-to-one assignment of the 4 rows to 5 columns
    best = max(sum(WORKED_MATRIX[i, c] for i, c in enumerate(cols)) for cols in itertools.permutations(range(5), 4))
    assert lin["total"] == pytest.approx(best, abs=1e-9)
    assert (tmp_path / res["figure"]).stat().st_size > 0


def test_precision_at_k_by_hand():
    scores = np.array([[9, 8, 7, 6, 5],   # query 0 (label a): top 2 after itself-ignore -> 1 (a), 2 (b)
                       [1, 9, 8, 7, 6],   # query 1 (a): top 2 -> 2 (b), 3 (b)
                       [5, 5, 9, 5, 1]])  # query 2 (b): ties by index -> 0 (a), 1 (a)
    labels = ["a", "a", "b", "b", "c"]
    ignore = np.zeros((3, 5), dtype=bool)
    ignore[[0, 1, 2], [0, 1, 2]] = True  # a query never retrieves itself
    assert precision_at_k(scores, labels[:3], labels, 2, ignore) == pytest.approx((1 / 2 + 0 + 0) / 3)
    # not ignored, a query finds itself: k=3 -> q0: a a b, q1: a b b, q2: b, then ties by index a a
    assert precision_at_k(scores, labels[:3], labels, 3) == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)


def test_chance_precision_by_hand():
    # a: 2 items (1 other of 4), b: 3 items (2 others of 4) -> (1/4 + 1/4 + 2/4 * 3) / 5
    assert chance_precision(["a", "a", "b", "b", "b"]) == pytest.approx((0.25 * 2 + 0.5 * 3) / 5)


def test_split_queries_is_disjoint_deterministic_and_keeps_the_gallery():
    sets = [np.ones((1, 2)) * i for i in range(40)]
    p = leave_one_out("t", sets, [f"a{i}" for i in range(40)], [i % 4 for i in range(40)])
    v, r = split_queries(p)
    assert set(v.q_ids).isdisjoint(r.q_ids) and set(v.q_ids) | set(r.q_ids) == set(p.q_ids)
    assert 0 < len(v.q_ids) < len(r.q_ids)
    assert len(v.gallery) == len(r.gallery) == 40 and v.ignore.shape == (len(v.q_ids), 40)
    for k, qid in enumerate(r.q_ids):  # the ignore rows follow their queries
        assert r.ignore[k].nonzero()[0].tolist() == [p.q_ids.index(qid)]
    assert split_queries(p)[0].q_ids == v.q_ids


def _art(aid, n, views, **meta) -> Article:
    return Article(aid, tuple(Path(f"/x/{aid}_{k}.jpg") for k in range(n)), group=meta.pop("group", aid),
                   title=meta.pop("title", None), views=views, meta=meta)


def test_luma_views_orders_photos_and_ordered_is_the_view_average():
    rng = np.random.default_rng(0)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    arts = [_art("l1", 4, ("back", "main", "alt1", "main"), source="magento-luma", category="c1"),
            _art("l2", 3, ("main", "alt1", "back"), source="magento-luma", category="c1"),
            _art("l3", 2, ("main", "back"), source="magento-luma", category="c2"),  # no alt1: left out
            _art("e1", 3, ("090-000", "090-045", "000-000"), source="eth80", category="cup", group="cup1"),
            _art("l4", 3, ("alt1", "back", "main"), source="magento-luma", category="c2")]
    sets = [unit(rng.normal(size=(len(a.images), 8))) for a in arts]
    vsets, info = luma_views(sets, Catalog(arts, Path("/x")))
    assert [i["id"] for i in info] == ["l1", "l2", "l4"]
    np.testing.assert_array_equal(vsets[0], sets[0][[1, 2, 0]])  # first main, alt1, back
    np.testing.assert_array_equal(vsets[2], sets[4][[2, 0, 1]])
    assert info[0]["photos"] == [arts[0].images[k] for k in (1, 2, 0)]
    p = leave_one_out("t", vsets, [i["id"] for i in info], [i["category"] for i in info], [LUMA_VIEWS] * 3)
    average = np.mean([np.stack([s[k] for s in vsets]) @ np.stack([s[k] for s in vsets]).T for k in range(3)], 0)
    np.testing.assert_allclose(matcher_scores("ordered", p), average, atol=1e-6)


def test_eth_objects_merges_an_objects_two_articles():
    arts = [_art("cup1-a", 2, ("090-000", "045-090"), source="eth80", category="cup", group="cup1"),
            _art("pear1-a", 1, ("000-000",), source="eth80", category="pear", group="pear1"),
            _art("cup1-b", 1, ("022-180",), source="eth80", category="cup", group="cup1"),
            _art("luma-x", 1, ("main",), source="magento-luma", category="c", group="luma-x")]
    sets = [np.full((len(a.images), 3), k, dtype=float) for k, a in enumerate(arts)]
    osets, views, ids, cats = eth_objects(sets, Catalog(arts, Path("/x")))
    assert ids == ["cup1", "pear1"] and cats == ["cup", "pear"]
    assert views[0] == ("090-000", "045-090", "022-180") and osets[0][:, 0].tolist() == [0, 0, 2]


def test_text_compare_rows_and_alpha():
    rng = np.random.default_rng(0)
    labels = [f"t{i % 3}" for i in range(30)]
    titles = [f"brand{i} {['runner', 'oxford', 'loafer'][i % 3]} shoe" for i in range(30)]
    image = rng.random((30, 30))
    p = leave_one_out("t", [np.ones((1, 2))] * 30, [f"a{i}" for i in range(30)], labels)
    res = compare(image, titles, p)
    assert set(res["rows"]) == {"image", "text", f"fused (alpha={res['alpha']})"}
    assert res["validation_queries"] + res["report_queries"] == 30
    assert res["rows"]["text"]["precision@3"] > res["rows"]["image"]["precision@3"]  # the titles name the type


def _png_ok(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    assert min(Image.open(path).size) > 50


def test_figures_write_pngs(tmp_path):
    photos = write_photos(tmp_path / "img", 6)
    _png_ok(matching_comparison(np.random.default_rng(0).random((2, 3)), {"a": [(0, 1, 0.5)], "b": [(1, 2, 0.7)]},
                                tmp_path / "m.png"))
    rows = [("target", photos[:3], None, None), ("cand 1", photos[3:6], [0.9, 0.8, 0.7], True),
            ("cand 2", [photos[0], tmp_path / "missing.jpg"], [0.5, 0.4, 0.3], False)]
    _png_ok(view_table(("main", "alt1", "back"), rows, tmp_path / "v.png"))
    d = np.random.default_rng(1).random((50, 50))
    _png_ok(distance_matrix((d + d.T) / 2, [f"type{i % 3}" for i in range(50)], tmp_path / "d.png", max_cells=16))
    _png_ok(method_bars({"mean": {"recall@1": 0.8, "map@r": 0.5}, "linear": {"recall@1": 0.6, "map@r": np.nan}},
                        ("recall@1", "map@r"), tmp_path / "b.png", "t"))


def _photo(path: Path, rgb: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 20, 3), rgb, dtype=np.uint8)).save(path)
    return path.name


def _tiny_catalogues(root: Path, rng: np.random.Generator) -> tuple[Path, Path, Path]:
    """fashion (styles.csv), multiview (Luma + ETH-80) and grocery (query / gallery) folders, a few articles each."""
    colour = lambda base: tuple(int(np.clip(c + rng.integers(-40, 40), 0, 255)) for c in base)  # noqa: E731
    bases = {"Casual Shoes": (200, 60, 60), "Sports Shoes": (60, 200, 60), "Formal Shoes": (60, 60, 200),
             "Tshirts": (128, 128, 128)}
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"]
    for k in range(16):
        kind = list(bases)[k % 4]
        _photo(root / "fashion" / "images" / f"{100 + k}.jpg", colour(bases[kind]))
        lines.append(f"{100 + k},Men,Footwear,Shoes,{kind},Black,Fall,2012,{kind.split()[0]},Brand{k} Men {kind}")
    (root / "fashion" / "styles.csv").write_text("\n".join(lines) + "\n")
    mv = []
    for k in range(8):  # Luma: 2 departments
        dept = ["Men/Tops", "Women/Bottoms"][k % 2]
        imgs = [f"images/l{k}_{v}.jpg" for v in LUMA_VIEWS]
        for im in imgs:
            _photo(root / "multiview" / im, colour((200, 100, 50) if k % 2 else (50, 100, 200)))
        mv.append({"id": f"luma-{k}", "images": imgs, "group": f"luma-{k}", "views": list(LUMA_VIEWS),
                   "title": f"Style {k} {'Hoodie' if k % 2 == 0 else 'Pants'}", "category": dept,
                   "source": "magento-luma"})
    for k in range(4):  # ETH-80: 4 objects of 2 categories, two articles each with disjoint angles
        obj, cat = f"{['cup', 'pear'][k % 2]}{k // 2}", ["cup", "pear"][k % 2]
        for side, angles in (("a", ("090-000", "045-090")), ("b", ("022-180", "000-000"))):
            imgs = [f"images/{obj}-{side}-{a}.jpg" for a in angles]
            for im in imgs:
                _photo(root / "multiview" / im, colour((240, 240, 40) if k % 2 else (40, 240, 240)))
            mv.append({"id": f"eth80-{obj}-{side}", "images": imgs, "group": f"eth80-{obj}", "views": list(angles),
                       "category": cat, "source": "eth80"})
    (root / "multiview" / "catalog.jsonl").write_text("\n".join(json.dumps(a) for a in mv) + "\n")
    gr = []
    for k in range(24):  # 4 products, query and gallery sessions
        prod = f"p{k % 4}"
        imgs = [f"images/{prod}_{k}_{j}.jpg" for j in range(2 + k % 2)]
        for im in imgs:
            _photo(root / "grocery" / im, colour((60 * (k % 4), 255 - 60 * (k % 4), 120)))
        gr.append({"id": f"{prod}-{k}", "images": imgs, "group": prod, "partition": "query" if k < 12 else "gallery"})
    (root / "grocery" / "catalog.jsonl").write_text("\n".join(json.dumps(a) for a in gr) + "\n")
    return root / "fashion", root / "multiview", root / "grocery"


def test_reproduce_end_to_end_on_tiny_catalogues(tmp_path, fake_backbone):
    fashion, multiview, grocery = _tiny_catalogues(tmp_path / "data", np.random.default_rng(0))
    out = tmp_path / "report"
    res = reproduce(fashion, multiview, grocery, out, fake_backbone, tmp_path / "cache", command="test",
                    progress=False)
    assert res["single"]["articles"] == 12 and res["ordered"]["luma"]["products"] == 8
    assert res["ordered"]["eth80"]["objects"] == 4 and res["ordered"]["luma"]["ordered_equals_view_average"]
    text = (out / "report.md").read_text()
    assert "0.829" in text and "`test`" in text
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # every figure the report links exists
        _png_ok(out / name)
    assert json.loads((out / "results.json").read_text())["grocery"]["queries"] > 0
