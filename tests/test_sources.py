"""Catalog sources: the generated demo catalog, and each adapter on a tiny fixture in the real dataset's format."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from setenc.catalogs import load_catalog, write_catalog
from setenc.plumbing.errors import CatalogError
from setenc.catalogs import demo, from_abo, from_folder, from_inshop, from_sop, from_styles_csv, make_demo_catalog
from setenc.catalogs.render import SHAPES, Look, Scene, render_photo

REPO = Path(__file__).resolve().parent.parent
FASHION = REPO.parent / "shared" / "data" / "fashion44k"
TINY = dict(n_groups=6, size=40)  # ~20 articles, ~45 photos: well under a second


def _photo(path: Path, colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), colour).save(path)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    return make_demo_catalog(tmp_path_factory.mktemp("demo") / "a", seed=0, **TINY)


# demo catalog


def test_demo_is_deterministic_by_seed(tiny_demo, tmp_path):
    same = make_demo_catalog(tmp_path / "b", seed=0, **TINY)
    other = make_demo_catalog(tmp_path / "c", seed=1, **TINY)
    a, b, c = _files(tiny_demo.parent), _files(same.parent), _files(other.parent)
    assert a == b  # every photo, the manifest and the stamp, byte for byte
    photos = [k for k in a if k.startswith("images")]
    assert len(photos) > 20
    assert sum(a[k] != c.get(k) for k in photos) > 0.9 * len(photos)


def test_demo_contents(tiny_demo):
    cat = load_catalog(tiny_demo)  # validates the manifest and that every photo exists
    by_group = Counter(a.group for a in cat)
    assert len(by_group) == TINY["n_groups"]
    assert all(2 <= n <= 4 for n in by_group.values())
    assert all(1 <= len(a.images) <= 5 for a in cat)
    assert len({len(a.images) for a in cat}) >= 3  # varied set sizes
    tags = {"front", "angle", "side", "back", "top"}
    for a in cat:
        assert a.views is not None and len(a.views) == len(a.images) and set(a.views) <= tags
        assert a.title and a.meta["category"] in SHAPES and a.meta["category"] in a.title
        k, n = int(a.id.rsplit("-", 1)[1]), by_group[a.group]
        assert a.partition == ("query" if k < n - n // 2 else "gallery")  # the first half are queries
    assert len({a.meta["category"] for a in cat if a.group == cat[0].group}) == 1  # a family shares its shape
    for g in by_group:  # a product's articles come from different capture sessions
        sessions = [a.meta["session"] for a in cat if a.group == g]
        assert len(set(sessions)) == len(sessions)
    assert max(Counter(a.meta["session"] for a in cat).values()) >= 2  # a session shoots several products
    with Image.open(cat[0].images[0]) as im:
        assert im.format == "JPEG" and im.size == (TINY["size"], TINY["size"]) and im.mode == "RGB"
    stamp = json.loads((tiny_demo.parent / demo.STAMP).read_text())
    assert stamp["photos"] == len(cat.image_paths) and "synthetic" in stamp["note"]


def test_default_size_gives_enough_queries_in_a_few_thousand_photos():
    n = demo.N_GROUPS
    designs, parents = demo._families(0, n)
    assert len({d.key for d in designs}) == n
    shapes, colours = Counter(d.shape for d in designs), Counter(d.colour for d in designs)
    assert max(shapes.values()) >= 5 and max(colours.values()) >= 3  # groups share shape / colour: hard negatives
    assert 0.25 * n <= sum(p is not None for p in parents) <= 0.45 * n  # near-copies of another family
    sizes, p = demo.ARTICLES_PER_GROUP
    mean_articles = float(np.dot(sizes, p))
    mean_queries = float(np.dot([demo._queries(int(k)) for k in sizes], p))
    mean_photos = float(np.dot(demo.PHOTOS_PER_ARTICLE[0], demo.PHOTOS_PER_ARTICLE[1]))
    assert 0.2 * n * mean_queries >= 160  # a 20 % test split holds ~150+ group-protocol queries
    assert 3000 <= n * mean_articles * mean_photos <= 4000  # embedded in well under a minute


def test_near_copies_are_shot_in_their_parents_sessions():
    designs, parents = demo._families(0, 60)
    counts = [2 + g % 3 for g in range(60)]
    plan = demo._plan(0, parents, counts, 12)
    for g, (parent, sessions) in enumerate(zip(parents, plan)):
        assert len(sessions) == counts[g] == len(set(sessions)) and all(0 <= s < 12 for s in sessions)
        if parent is not None:  # its gallery article shares the session of its parent's first query
            assert sessions[-1] == plan[parent][0]


def test_second_call_does_not_rebuild(tiny_demo, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(demo, "_build", boom)
    assert make_demo_catalog(tiny_demo.parent, seed=0, **TINY) == tiny_demo


def test_default_folder_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SETENC_CACHE", str(tmp_path / "cache"))
    path = make_demo_catalog(seed=4, n_groups=1, size=32)
    assert path == tmp_path / "cache" / "demo" / f"v{demo.DEMO_VERSION}-seed4-g1-px32" / "catalog.jsonl"
    assert path.is_file()


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return render_photo(*args, **kwargs)

    monkeypatch.setattr(demo, "render_photo", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_demo_catalog(tmp_path / "d", seed=0, n_groups=2, size=24)
    assert list(tmp_path.iterdir()) == []  # no half catalog, no temp folder left behind
    monkeypatch.undo()
    assert load_catalog(make_demo_catalog(tmp_path / "d", seed=0, n_groups=2, size=24))


def test_demo_folder_rules(tmp_path):
    first = make_demo_catalog(tmp_path / "d", seed=0, n_groups=1, size=24)
    second = make_demo_catalog(tmp_path / "d", seed=1, n_groups=2, size=24)  # other parameters: replaced
    assert first == second and json.loads((tmp_path / "d" / demo.STAMP).read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    _photo(tmp_path / "mine" / "x.jpg")
    with pytest.raises(CatalogError, match="not a generated demo catalog"):
        make_demo_catalog(tmp_path / "mine", n_groups=1, size=24)
    with pytest.raises(CatalogError, match="n_groups"):
        make_demo_catalog(tmp_path / "e", n_groups=0)


def _pixels(im: Image.Image, colour: str) -> int:
    """Pixels clearly of one colour: 'magenta' (the test logo) or 'green' (the test lid)."""
    a = np.asarray(im).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    if colour == "magenta":
        return int(((r > g + 70) & (b > g + 70)).sum())
    return int(((g > r + 70) & (g > b + 70)).sum())


GREY_SET = Scene(backdrop="checks", palette=((0.4, 0.4, 0.45), (0.6, 0.6, 0.6), (0.5, 0.5, 0.5)), cast=(1.0, 1.0, 1.0),
                 light=(0.3, 0.6, -0.7), zoom=0.7, period=5.0, layout=0)


@pytest.mark.parametrize("scene", [None, GREY_SET], ids=["random", "session"])
@pytest.mark.parametrize("shape", ["box", "bottle", "can"])
def test_views_show_what_their_tag_says(shape, scene):
    """The logo is printed on the front only: seen at yaw 0, gone from the back and (nearly) from the side."""
    look = Look(shape=shape, scale=(1.0, 1.0), base=(0.5, 0.5, 0.5), accent=(0.5, 0.5, 0.5), pattern="plain",
                freq=2.0, label=(0.9, 0.9, 0.9), band=(-0.5, 0.3), wrap=False, logo="circle", mark=(1.0, 0.0, 1.0),
                lid=(0.0, 0.8, 0.0), gloss=0.0, text=(0.2, 0.2), barcode=0)

    def count(yaw, pitch, colour):  # the same rng seed: same framing, light and background for every view
        return _pixels(render_photo(look, yaw, pitch, np.random.default_rng(3), 96, scene), colour)

    front, side, back = (count(yaw, 10, "magenta") for yaw in (0, 90, 180))
    assert front > 60 and back < 5 and side < front / 4
    if shape == "can":  # its flat lid faces the camera from the top, but not from below
        assert count(0, 80, "green") > 3 * max(count(0, -30, "green"), 1)


def test_a_session_shares_its_backdrop_across_products():
    """Two different products shot in one session look alike around them; the same product in two sessions not."""
    scenes = demo._scenes(0, 8)
    looks = [demo._variant(d, np.random.default_rng(k))[0] for k, d in enumerate(demo._designs(0, 2))]

    def rim(look, scene, seed):  # mean colour of the photo's border, where the backdrop shows
        a = np.asarray(render_photo(look, 0, 10, np.random.default_rng(seed), 64, scene), float)
        return np.concatenate([a[:6].reshape(-1, 3), a[-6:].reshape(-1, 3)]).mean(0)

    same_session = np.abs(rim(looks[0], scenes[0], 1) - rim(looks[1], scenes[0], 2)).sum()
    same_product = np.abs(rim(looks[0], scenes[0], 1) - rim(looks[0], scenes[4], 1)).sum()
    assert same_session < same_product


# folder layout


def test_from_folder_one_level(tmp_path):
    _photo(tmp_path / "a2" / "z.webp")
    _photo(tmp_path / "a1" / "y.PNG")
    _photo(tmp_path / "a1" / "x.jpg")
    _photo(tmp_path / "a1" / ".hidden.jpg")
    (tmp_path / "a1" / "notes.txt").write_text("not a photo")
    (tmp_path / "empty").mkdir()
    cat = from_folder(tmp_path)
    assert cat.ids == ["a1", "a2"] and all(a.group is None for a in cat)
    assert cat[0].images == (tmp_path / "a1" / "x.jpg", tmp_path / "a1" / "y.PNG")


def test_from_folder_two_levels_and_round_trip(tmp_path):
    root = tmp_path / "src"
    for rel in ["shoes/s1/a.jpg", "shoes/s1/b.jpeg", "shoes/s2/c.jpg", "bags/b1/d.png"]:
        _photo(root / rel)
    cat = from_folder(root)
    assert cat.ids == ["bags/b1", "shoes/s1", "shoes/s2"] and [a.group for a in cat] == ["bags", "shoes", "shoes"]
    assert [a.group for a in from_folder(root, group_from_parent=False)] == [None] * 3
    back = load_catalog(write_catalog(cat, tmp_path / "out"))  # no photo copied; paths relative to out/
    assert back.articles == cat.articles
    assert json.loads((tmp_path / "out" / "catalog.jsonl").read_text().splitlines()[0])["images"] == [
        "../src/bags/b1/d.png"]


def test_from_folder_errors(tmp_path):
    with pytest.raises(CatalogError, match="not a folder"):
        from_folder(tmp_path / "missing")
    (tmp_path / "a" / "b" / "c").mkdir(parents=True)
    with pytest.raises(CatalogError, match="no article folders with photos"):
        from_folder(tmp_path)


# Stanford Online Products


def _sop(root: Path) -> None:
    rows = {"train": [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
                      (3, 2, 2, "chair_final/222_0.JPG"), (4, 2, 2, "chair_final/222_1.JPG"),
                      (5, 2, 2, "chair_final/222_2.JPG")],
            "test": [(6, 3, 1, "bicycle_final/333_0.JPG"), (7, 3, 1, "bicycle_final/333_1.JPG")]}
    for split, lines in rows.items():
        text = "image_id class_id super_class_id path\n" + "".join(" ".join(map(str, r)) + "\n" for r in lines)
        (root / f"Ebay_{split}.txt").write_text(text)
        for r in lines:
            _photo(root / r[3])


def test_from_sop(tmp_path):
    _sop(tmp_path)
    train = from_sop(tmp_path)
    assert train.ids == ["1", "2"] and [len(a.images) for a in train] == [2, 3]
    assert train[1].images[2] == tmp_path / "chair_final" / "222_2.JPG"
    assert train[0].group is None  # one article per product: positives are subsets of an article's photos
    assert train[1].meta == {"category": "chair", "super_class_id": 2, "subset": "train"}
    assert from_sop(tmp_path, "test").ids == ["3"] and from_sop(tmp_path, "all").ids == ["1", "2", "3"]
    assert len(load_catalog(write_catalog(from_sop(tmp_path, "all"), tmp_path / "cat"))) == 3


def test_from_sop_errors(tmp_path):
    _sop(tmp_path)
    with open(tmp_path / "Ebay_test.txt", "a") as f:
        f.write("8 3 bicycle_final/333_2.JPG\n")
    with pytest.raises(CatalogError, match=r"Ebay_test\.txt:4: expected 'image_id class_id super_class_id path'"):
        from_sop(tmp_path, "test")
    (tmp_path / "Ebay_train.txt").unlink()
    with pytest.raises(CatalogError, match=r"Ebay_train\.txt: Stanford Online Products list file .*not found"):
        from_sop(tmp_path, "all")
    with pytest.raises(CatalogError, match="split must be"):
        from_sop(tmp_path, "val")


# DeepFashion In-shop


def _inshop(root: Path, rows: list[tuple[str, str, str]], count: int | None = None) -> None:
    lines = [str(len(rows) if count is None else count), "image_name item_id evaluation_status"]
    lines += [f"{name}   {item}   {status}" for name, item, status in rows]
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


INSHOP = [
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
    ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
    ("img/MEN/Denim/id_00000080/01_3_back.jpg", "id_00000080", "gallery"),
    ("img/MEN/Denim/id_00000080/01_7_additional.jpg", "id_00000080", "query"),
]


def test_from_inshop(tmp_path):
    _inshop(tmp_path, INSHOP)
    cat = from_inshop(tmp_path)
    assert cat.ids == ["id_00000002", "id_00000080-query", "id_00000080-gallery"]
    train, query, gallery = cat
    assert [a.group for a in cat] == ["id_00000002", "id_00000080", "id_00000080"]
    assert [a.partition for a in cat] == [None, "query", "gallery"]
    assert query.views == ("front", "additional") and gallery.views == ("side", "back")
    assert query.images[1] == tmp_path / "img/MEN/Denim/id_00000080/01_7_additional.jpg"
    assert train.meta == {"category": "Dresses", "gender": "WOMEN"}


def test_from_inshop_errors(tmp_path):
    with pytest.raises(CatalogError, match=r"list_eval_partition\.txt: DeepFashion In-shop list file"):
        from_inshop(tmp_path)
    _inshop(tmp_path, INSHOP[:2] + [("img/x/y/id_1/a.jpg", "id_1", "val")])
    with pytest.raises(CatalogError, match=r"list_eval_partition\.txt:5: expected 'image_name item_id"):
        from_inshop(tmp_path)
    _inshop(tmp_path, INSHOP, count=10)
    with pytest.raises(CatalogError, match="says 10 photos but 6 are listed"):
        from_inshop(tmp_path)


# Amazon Berkeley Objects


def _abo(root: Path) -> tuple[Path, Path, Path]:
    listings = [
        {"item_id": "B01", "main_image_id": "i1", "other_image_id": ["i2", "i9"],
         "product_type": [{"value": "SHOES"}],
         "item_name": [{"language_tag": "de_DE", "value": "Schuh"}, {"language_tag": "en_US", "value": "Red shoe"}],
         "brand": [{"language_tag": "en_US", "value": "Acme"}]},
        {"item_id": "B02", "main_image_id": "i3", "product_type": [{"value": "CHAIR"}],
         "item_name": [{"language_tag": "fr_FR", "value": "Chaise"}]},
        {"item_id": "B03", "main_image_id": "i8"},  # no photo in images.csv: skipped and counted
    ]
    (root / "listings").mkdir()
    with gzip.open(root / "listings" / "listings_0.json.gz", "wt") as f:
        f.write("".join(json.dumps(x) + "\n" for x in listings[:2]))
    (root / "listings" / "listings_1.json").write_text(json.dumps(listings[2]) + "\n")
    with gzip.open(root / "images.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "height", "width", "path"])
        for i, rel in [("i1", "14/a.jpg"), ("i2", "14/b.jpg"), ("i3", "2c/c.jpg")]:
            w.writerow([i, 6, 6, rel])
            _photo(root / "small" / rel)
    return root / "listings", root / "images.csv.gz", root / "small"


def test_from_abo(tmp_path, caplog):
    listings, images_csv, images_root = _abo(tmp_path)
    with caplog.at_level(logging.WARNING):
        cat = from_abo(listings, images_csv, images_root)
    assert cat.ids == ["B01", "B02"]
    assert cat[0].images == (images_root / "14/a.jpg", images_root / "14/b.jpg")
    assert (cat[0].group, cat[0].title, cat[0].meta) == ("SHOES", "Red shoe", {"brand": "Acme"})
    assert (cat[1].group, cat[1].title) == ("CHAIR", "Chaise")  # no English name: the first one
    assert "skipped 2 image ids" in caplog.text and "1 listings without photos" in caplog.text
    one = from_abo(listings / "listings_0.json.gz", images_csv, images_root)  # a single listings file
    assert one.ids == ["B01", "B02"]


def test_from_abo_errors(tmp_path):
    listings, images_csv, images_root = _abo(tmp_path)
    with open(listings / "listings_1.json", "a") as f:
        f.write('{"item_id": "B04", \n')
    with pytest.raises(CatalogError, match=r"listings_1\.json:2: not valid JSON"):
        from_abo(listings, images_csv, images_root)
    with pytest.raises(CatalogError, match=r"nope\.csv: ABO images\.csv"):
        from_abo(listings, tmp_path / "nope.csv", images_root)


# Kaggle styles.csv

STYLES_HEADER = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def _styles(root: Path, rows: list[str], photos: list[str]) -> None:
    (root / "styles.csv").write_text(STYLES_HEADER + "\n" + "\n".join(rows) + "\n")
    for i in photos:
        _photo(root / "images" / f"{i}.jpg")


STYLES = [
    "15970,Men,Apparel,Topwear,Shirts,Navy Blue,Fall,2011,Casual,Turtle Check Men Navy Blue Shirt",
    "39386,Men,Apparel,Bottomwear,Jeans,Blue,Summer,2012,Casual,Peter England Men Party Blue Jeans",
    "59263,Women,Accessories,Watches,Watches,Silver,Winter,2016,,Titan Women Silver Watch",
    "21379,Men,Apparel,Bottomwear,Track Pants,Black,Fall,2011,Casual,Manchester United Men Black, Red Track Pants",
    "53759,Men,Apparel,Topwear,Tshirts,Grey,Summer,2012,Casual,Puma Men Grey T-shirt",
]


def test_from_styles_csv(tmp_path, caplog):
    _styles(tmp_path, STYLES, ["15970", "39386", "59263", "21379"])  # 53759's photo is missing
    with caplog.at_level(logging.WARNING):
        cat = from_styles_csv(tmp_path)
    assert "skipped 1 of 5 rows" in caplog.text
    assert cat.ids == ["15970", "39386", "59263", "21379"]
    assert [a.group for a in cat] == ["Shirts", "Jeans", "Watches", "Track Pants"]
    assert cat[3].title == "Manchester United Men Black, Red Track Pants"  # the extra comma kept
    assert cat[0].images == (tmp_path / "images" / "15970.jpg",)
    assert cat[2].meta == {"gender": "Women", "masterCategory": "Accessories", "subCategory": "Watches",
                           "articleType": "Watches", "baseColour": "Silver", "season": "Winter", "year": "2016"}
    two = from_styles_csv(tmp_path, group_by=["articleType", "baseColour"])
    assert two[0].group == "Shirts/Navy Blue"
    assert [a.group for a in from_styles_csv(tmp_path, group_by="usage")][2] is None  # empty value: no group


def test_from_styles_csv_errors(tmp_path):
    with pytest.raises(CatalogError, match=r"styles\.csv \(Kaggle"):
        from_styles_csv(tmp_path)
    _styles(tmp_path, STYLES[:2] + ["1234,Men,Apparel,Topwear"], ["15970"])
    with pytest.raises(CatalogError, match=r"styles\.csv:4: expected 10 columns"):
        from_styles_csv(tmp_path)
    _styles(tmp_path, STYLES[:2] + [STYLES[0]], ["15970"])
    with pytest.raises(CatalogError, match=r"styles\.csv:4: duplicate id '15970' \(first on line 2\)"):
        from_styles_csv(tmp_path)
    with pytest.raises(CatalogError, match="no column 'colour'"):
        from_styles_csv(tmp_path, group_by="colour")


@pytest.mark.realdata
def test_styles_csv_on_real_fashion44k():
    if not (FASHION / "styles.csv").is_file():
        pytest.skip(f"real catalogue fashion44k not found at {FASHION} (it ships with CI, not with the package)")
    cat = from_styles_csv(FASHION)
    reference = {}  # the catalogue's own manifest, built independently
    for line in (FASHION / "catalog.jsonl").read_text().splitlines():
        obj = json.loads(line)
        reference[obj["id"]] = (obj["group"], obj["title"], obj["images"])
    assert len(cat) == len(reference) == 7583
    for a in cat:
        group, title, images = reference[a.id]
        assert (a.group, a.title, a.images) == (group, title.strip(), tuple(FASHION / p for p in images))


# the script


def _script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_catalog.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_make_catalog_script(tmp_path):
    for rel in ["shoes/s1/a.jpg", "shoes/s2/c.jpg", "bags/b1/d.png"]:
        _photo(tmp_path / "src" / rel)
    done = _script("folder", str(tmp_path / "src"), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("catalog.jsonl: 3 articles, 3 photos, 2 groups")
    assert load_catalog(tmp_path / "out").ids == ["bags/b1", "shoes/s1", "shoes/s2"]
    bad = _script("sop", str(tmp_path / "src"), "--out", str(tmp_path / "out2"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Ebay_train.txt" in bad.stderr
    assert "Traceback" not in bad.stderr
