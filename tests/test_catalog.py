"""The JSONL manifest: round trip, every kind of bad manifest, metadata, and the id-hash splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from setenc.catalogs import Article, Catalog, load_catalog, split_catalog, write_catalog
from setenc.plumbing.errors import CatalogError, SetencError


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    return [_photo(tmp_path / "img" / f"p{i}.jpg") for i in range(4)]


def _manifest(folder: Path, lines: list) -> Path:
    """Write raw manifest lines (dicts are JSON-encoded, strings written as they are)."""
    path = folder / "catalog.jsonl"
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_round_trip_keeps_everything(tmp_path, photos):
    articles = [
        Article("a1", (photos[0], photos[1]), group="g1", title="red mug", views=("front", "back"),
                partition="query", meta={"category": "mug", "session": 3}),
        Article("a2", (photos[2],), group="g1", partition="gallery"),
        Article("a3", (photos[3], photos[0]), title="no group"),
    ]
    out = tmp_path / "out" / "catalog.jsonl"
    write_catalog(Catalog(articles, tmp_path, pairs=[("a1", "a3")]), out)

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["images"] == ["../img/p0.jpg", "../img/p1.jpg"]  # relative to the manifest's folder
    assert lines[0]["category"] == "mug" and lines[0]["session"] == 3  # meta back at the top level
    assert "group" not in lines[2] and "views" not in lines[1]
    assert (out.parent / "pairs.csv").read_text().splitlines() == ["a,b", "a1,a3"]

    back = load_catalog(out.parent)  # a folder means folder/catalog.jsonl
    assert back.articles == articles
    assert [a.meta for a in back] == [a.meta for a in articles]
    assert back.pairs == [("a1", "a3")]
    assert all(p.is_absolute() for a in back for p in a.images)
    assert back.image_paths == photos[:2] + photos[2:]  # each photo once, catalog order


def test_extra_keys_are_meta(tmp_path, photos):
    path = _manifest(tmp_path, [{"id": 7, "images": ["img/p0.jpg"], "category": "shoe", "price": 9.5,
                                 "tags": ["a", "b"]}])
    (a,) = load_catalog(path).articles
    assert a.id == "7"  # integer ids become strings
    assert a.meta == {"category": "shoe", "price": 9.5, "tags": ["a", "b"]}
    assert a.group is None and a.views is None and a.partition is None


GOOD = {"id": "a1", "images": ["img/p0.jpg"]}


@pytest.mark.parametrize(
    "lines, match",
    [
        ([GOOD, '{"id": "a2", "images": ["img/p1.jpg"'], r"catalog\.jsonl:2: not valid JSON \(.* at column 37\)"),
        ([GOOD, {"id": "a2", "images": ["img/p1.jpg"]}, {"id": "a1", "images": ["img/p2.jpg"]}],
         r"catalog\.jsonl:3: duplicate article id 'a1' \(first on line 1\)"),
        ([GOOD, {"id": "a2", "images": []}], r"catalog\.jsonl:2: article 'a2' has no photos"),
        ([GOOD, {"id": "a2", "images": ["img/nope.jpg"]}],
         r"catalog\.jsonl:2: article 'a2': photo not found.*nope\.jpg"),
        ([{"id": "a1", "images": ["img/p0.jpg", "img/p1.jpg"], "views": ["front"]}],
         r"catalog\.jsonl:1: article 'a1': 'views' \(1\) must list one tag per photo \(2 photos\)"),
        ([GOOD, {"id": "a2", "images": ["img/p1.jpg"], "partition": "test"}],
         r"catalog\.jsonl:2: article 'a2': 'partition' must be one of"),
        ([GOOD, ["a2"]], r"catalog\.jsonl:2: expected a JSON object, got list"),
        ([GOOD, {"images": ["img/p1.jpg"]}], r"catalog\.jsonl:2: missing or empty 'id'"),
        ([GOOD, {"id": "a2", "images": "img/p1.jpg"}], r"catalog\.jsonl:2: article 'a2': 'images' must be a list"),
        (["", "  "], r"catalog\.jsonl: the manifest lists no articles"),
    ],
    ids=["json", "duplicate", "empty-images", "missing-photo", "views-length", "partition", "not-object",
         "no-id", "images-not-list", "empty-manifest"],
)
def test_bad_manifest_names_line_and_article(tmp_path, photos, lines, match):
    path = _manifest(tmp_path, [json.dumps(x) if isinstance(x, list) else x for x in lines])
    with pytest.raises(CatalogError, match=match) as info:
        load_catalog(path)
    assert isinstance(info.value, SetencError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


def test_missing_photo_allowed_without_file_check(tmp_path, photos):
    path = _manifest(tmp_path, [{"id": "a1", "images": ["img/later.jpg"]}])
    (a,) = load_catalog(path, check_files=False).articles
    assert a.images == ((tmp_path / "img" / "later.jpg").resolve(),)


def test_missing_manifest(tmp_path):
    with pytest.raises(CatalogError, match="no catalog manifest"):
        load_catalog(tmp_path)


def test_pairs_naming_unknown_article(tmp_path, photos):
    path = _manifest(tmp_path, [GOOD, {"id": "a2", "images": ["img/p1.jpg"]}])
    (tmp_path / "pairs.csv").write_text("a,b\na1,a2\na1,zz\n")
    with pytest.raises(CatalogError, match=r"pairs\.csv:3: pair names unknown article 'zz'"):
        load_catalog(path)
    (tmp_path / "pairs.csv").write_text("a1\n")
    with pytest.raises(CatalogError, match=r"pairs\.csv:1: expected two article ids"):
        load_catalog(path)
    (tmp_path / "pairs.csv").write_text("a1, a2\n\n")  # no header, spaces, a blank line
    assert load_catalog(path).pairs == [("a1", "a2")]
    with pytest.raises(CatalogError, match="pairs file not found"):
        load_catalog(path, pairs=tmp_path / "other.csv")


def test_rewrite_without_pairs_drops_old_pairs(tmp_path, photos):
    articles = [Article("a1", (photos[0],)), Article("a2", (photos[1],))]
    write_catalog(Catalog(articles, tmp_path, pairs=[("a1", "a2")]), tmp_path / "out")
    write_catalog(Catalog(articles, tmp_path), tmp_path / "out")
    assert load_catalog(tmp_path / "out").pairs is None


def _catalog(n: int, per_group: int = 3, start: int = 0) -> Catalog:
    """n articles, per_group of them in each group; ids and groups numbered from `start`."""
    arts = [Article(f"a{i}", (Path(f"/x/{i}.jpg"),), group=f"g{i // per_group}") for i in range(start, start + n)]
    return Catalog(arts, Path("/x"))


def _ids(parts: dict[str, Catalog]) -> dict[str, list[str]]:
    return {k: v.ids for k, v in parts.items()}


def test_split_is_deterministic_and_seeded():
    cat = _catalog(300)
    assert _ids(split_catalog(cat, seed=1)) == _ids(split_catalog(cat, seed=1))
    assert _ids(split_catalog(cat, seed=1)) != _ids(split_catalog(cat, seed=2))
    parts = split_catalog(cat)
    assert sorted(sum(_ids(parts).values(), [])) == sorted(cat.ids)  # a partition of the catalog
    assert [p.name for p in parts.values()] == ["catalog-train", "catalog-val", "catalog-test"]


def test_split_stable_when_unrelated_articles_are_added():
    small, extra = _catalog(300), _catalog(200, start=300)
    before = split_catalog(small, seed=3)
    after = split_catalog(Catalog(small.articles + extra.articles, small.root), seed=3)
    keep = set(small.ids)
    for name in ("train", "val", "test"):
        assert before[name].ids == [i for i in after[name].ids if i in keep]


def test_split_never_shares_a_group():
    parts = split_catalog(_catalog(600, per_group=4), fractions=(0.6, 0.2, 0.2))
    groups = {k: {a.group for a in v} for k, v in parts.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


@pytest.mark.parametrize("by", ["article", "group"])
def test_split_fractions_roughly_respected(by):
    cat = _catalog(1200, per_group=1 if by == "article" else 2)
    parts = split_catalog(cat, fractions=(0.7, 0.2, 0.1), by=by)
    got = [len(parts[k]) / len(cat) for k in ("train", "val", "test")]
    assert got == pytest.approx([0.7, 0.2, 0.1], abs=0.05)  # 1200 (600 groups): sd of a fraction < 0.02


def test_split_without_groups_and_bad_fractions():
    cat = Catalog([Article(f"a{i}", (Path(f"/x/{i}.jpg"),)) for i in range(400)], Path("/x"))
    parts = split_catalog(cat, by="group")  # no groups: falls back to article ids
    assert _ids(parts) == _ids(split_catalog(cat, by="article"))
    assert min(len(p) for p in parts.values()) > 0
    parts = split_catalog(cat, fractions=(1.0, 0.0, 0.0))
    assert len(parts["train"]) == 400 and len(parts["val"]) == len(parts["test"]) == 0
    for bad in [(0.5, 0.3, 0.1), (1.2, -0.1, -0.1)]:
        with pytest.raises(CatalogError, match="sum to 1"):
            split_catalog(cat, fractions=bad)


def test_subset_restricts_pairs():
    cat = _catalog(6)
    cat.pairs = [("a0", "a1"), ("a1", "a4"), ("a4", "a5")]
    sub = cat.subset(["a5", "a1", "a4"], name="sub")
    assert sub.ids == ["a1", "a4", "a5"] and sub.pairs == [("a1", "a4"), ("a4", "a5")] and sub.name == "sub"


def test_paths_keep_symlinked_folders_as_written(tmp_path):
    """One rule for paths (manifest loader and adapters alike): absolute, `..` collapsed, symlinks not followed."""
    from conftest import write_photos

    from setenc.catalogs import from_folder

    real = tmp_path / "real"
    write_photos(real / "shop" / "a1", 2)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "x").mkdir()
    via_link = tmp_path / "x" / ".." / "link" / "shop"
    cat = from_folder(via_link)
    write_catalog(cat, tmp_path / "link" / "cat.jsonl")
    loaded = load_catalog(tmp_path / "x" / ".." / "link" / "cat.jsonl")
    want = tuple(sorted((tmp_path / "link" / "shop" / "a1").iterdir()))
    assert tuple(sorted(cat.articles[0].images)) == want == tuple(sorted(loaded.articles[0].images))
