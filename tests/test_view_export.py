"""View-aware exports and searches: the catalogue's photo tags reach the head at export, the query's at search."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import setenc.photos
from setenc.catalogs import load_catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.search.export import export_index
from setenc.heads.model import create_head
from setenc.search.index import SetIndex
from setenc.photos import photo_sets
from setenc.photos.tta import with_tta
from setenc.search.queries import answer, read_queries

from conftest import REPO
from test_index import colour_catalog

VOCAB = ["back", "front", "side"]


def tagged_catalog(root: Path, n: int = 12) -> Path:
    """`colour_catalog` with a view tag per photo, the tags of an article rotating with its number."""
    path = colour_catalog(root, n)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for i, line in enumerate(lines):
        line["views"] = [VOCAB[(i + j) % 3] for j in range(len(line["images"]))]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def view_encoder(backbone, path: Path, tta: str | None = None) -> SetEncoder:
    """A saved and reloaded view-aware `proj` head with a trained (non-zero) view table: tags change its vectors."""
    torch.manual_seed(0)
    head = create_head("proj", backbone.dim, views=VOCAB)
    with torch.no_grad():
        head.part("views").table.weight.normal_(0, 0.5)
    spec = with_tta({"name": "fake", "kwargs": {}, "id": backbone.id}, tta)
    return SetEncoder.from_pretrained(SetEncoder(head.eval(), spec, backbone.dim).save(path), backbone=backbone)


def export(encoder, catalog, tmp_path, out="idx") -> dict:
    return export_index(encoder, catalog, tmp_path / "cache", tmp_path / out, progress=False,
                        expansion="none")  # scores are the exact cosines these tests compare


@pytest.fixture
def tagged(fake_backbone, tmp_path) -> tuple[SetEncoder, Path, SetIndex]:
    enc = view_encoder(fake_backbone, tmp_path / "views.pt")
    cat = tagged_catalog(tmp_path)
    export(enc, cat, tmp_path)
    return enc, cat, SetIndex.load(tmp_path / "idx", enc)


@pytest.mark.parametrize("tta", [None, "flip:elements"])
def test_export_encodes_the_catalogue_tags(fake_backbone, tmp_path, tta):
    enc = view_encoder(fake_backbone, tmp_path / "views.pt", tta)
    cat = load_catalog(tagged_catalog(tmp_path))
    export(enc, cat, tmp_path)
    vectors = np.asarray(SetIndex.load(tmp_path / "idx", enc).vectors)
    sets, kept, _, _ = photo_sets(cat, fake_backbone, tmp_path / "cache", progress=False, tta=enc.tta)
    assert len(sets[2]) == 3 * enc.tta.per_photo and kept.ids == cat.ids
    tags = [a.views for a in cat]
    np.testing.assert_allclose(vectors, enc.encode_sets(sets, views=tags), atol=1e-6)
    np.testing.assert_allclose(vectors, enc.encode([list(a.images) for a in cat], views=tags), atol=1e-6)
    assert not np.allclose(vectors, enc.encode_sets(sets), atol=1e-3)  # untagged = unknown: other vectors


def test_a_skipped_photo_takes_its_tag_along(fake_backbone, tmp_path):
    enc = view_encoder(fake_backbone, tmp_path / "views.pt")
    cat = load_catalog(tagged_catalog(tmp_path))
    a2 = cat.articles[2]
    a2.images[1].write_bytes(b"not a photo")
    manifest = export(enc, cat, tmp_path)
    assert any(str(a2.images[1]) in line for line in manifest["skipped_photos"])
    x = enc.embed_photos([a2.images[0], a2.images[2]])
    want = enc.encode_sets([x], views=[(a2.views[0], a2.views[2])])[0]
    got = np.asarray(SetIndex.load(tmp_path / "idx", enc).vectors[2])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tag_free_head_exports_are_unchanged(fake_backbone, tmp_path):
    enc = SetEncoder.parameter_free(fake_backbone, "proj")
    export(enc, tagged_catalog(tmp_path / "a"), tmp_path, "tagged")
    export(enc, colour_catalog(tmp_path / "b", 12), tmp_path, "plain")
    assert (tmp_path / "tagged" / "vectors.npy").read_bytes() == (tmp_path / "plain" / "vectors.npy").read_bytes()
    idx = SetIndex.load(tmp_path / "plain", enc)
    photos = list(load_catalog(tmp_path / "b" / "catalog.jsonl")[4].images)
    assert not idx.view_aware
    assert idx.search(photos, k=3, views=["side", "front"]) == idx.search(photos, k=3)  # checked, then ignored
    with pytest.raises(SetencError, match="1 view tags for 2 photos"):
        idx.search(photos, k=3, views=["side"])


def test_search_with_views_finds_the_article(tagged):
    enc, cat_path, idx = tagged
    cat = load_catalog(cat_path)
    assert idx.view_aware
    for a in cat.articles[:6]:
        hits = idx.search(list(a.images), k=1, views=list(a.views))
        assert hits[0][0] == a.id and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    a = cat.articles[5]
    want = enc.encode([list(a.images)], views=[a.views])[0]
    np.testing.assert_allclose(idx.vectorize([list(a.images)], views=[a.views])[0], want, atol=1e-6)
    untagged = idx.vectorize([list(a.images)])[0]  # no tags: every photo "unknown"
    np.testing.assert_allclose(untagged, enc.encode([list(a.images)])[0], atol=1e-6)
    assert not np.allclose(untagged, want, atol=1e-3)
    ids, _ = idx.search_batch([list(b.images) for b in cat.articles[:3]], k=1,
                              views=[list(b.views) for b in cat.articles[:3]])
    assert list(ids[:, 0]) == cat.ids[:3]


@pytest.mark.parametrize("views, words", [
    (["front"], "1 view tags for 3 photos"),
    (["front", "side", "back", "top"], "4 view tags for 3 photos"),
    ("front", "view tags \\(text\\)"),
])
def test_bad_views_are_one_line_errors(tagged, views, words):
    _, cat_path, idx = tagged
    photos = list(load_catalog(cat_path)[2].images)
    with pytest.raises(SetencError, match=words) as e:
        idx.search(photos, k=1, views=views)
    assert "\n" not in str(e.value)
    with pytest.raises(SetencError, match="0 photos"):  # a vector query has no photos to tag
        idx.search(np.asarray(idx.vectors[0]), k=1, views=["front"])
    with pytest.raises(SetencError, match="2 queries but views"):
        idx.search_batch([photos, photos], k=1, views=[["front"] * 3])


def test_query_file_views(tagged, tmp_path):
    enc, cat_path, idx = tagged
    a = load_catalog(cat_path)[4]
    lines = [{"photos": [str(p) for p in a.images], "views": list(a.views), "qid": "tagged"},
             {"photos": [str(p) for p in a.images], "qid": "untagged"}]
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps(x) + "\n" for x in lines))
    results = list(answer(idx, read_queries(qfile, idx), k=1))
    assert results[0]["hits"][0]["id"] == a.id and results[0]["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
    scores = np.asarray(idx.vectors) @ enc.encode([list(a.images)])[0]  # untagged: every photo "unknown"
    top, hit = int(np.argmax(scores)), results[1]["hits"][0]
    assert hit["id"] == idx.ids[top] and hit["score"] == pytest.approx(scores[top], abs=1e-5)
    assert scores[4] < 0.9999
    for bad in ({"photos": [str(a.images[0])], "views": ["front", "side"]}, {"id": "a1", "views": ["front"]},
                {"photos": [str(a.images[0])], "views": "front"}):
        qfile.write_text(json.dumps(bad) + "\n")
        with pytest.raises(SetencError, match="q.jsonl:1: 'views' must list one view tag per photo"):
            read_queries(qfile, idx)


def search_script(monkeypatch, capsys, backbone, *args) -> tuple[int, str, str]:
    """scripts/search.py in this process (the fake backbone stands in for the recorded one): (status, out, err)."""
    monkeypatch.setattr(setenc.photos, "create_backbone", lambda *a, **kw: backbone)
    monkeypatch.setattr(sys, "argv", ["search.py", *map(str, args)])
    status = 0
    try:
        runpy.run_path(str(REPO / "scripts" / "search.py"), run_name="__main__")
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def test_search_script_views(tagged, fake_backbone, tmp_path, monkeypatch, capsys):
    _, cat_path, _ = tagged
    a = load_catalog(cat_path)[5]
    status, out, err = search_script(monkeypatch, capsys, fake_backbone, tmp_path / "idx", *a.images, "-k", "2",
                                     "--views", ",".join(a.views))
    assert status == 0, err
    first = out.splitlines()[1].split()
    assert first[:2] == ["1", a.id] and float(first[2]) == pytest.approx(1.0, abs=1e-4)
    status, out, err = search_script(monkeypatch, capsys, fake_backbone, tmp_path / "idx", *a.images, "-k", "2")
    assert status == 0 and float(out.splitlines()[1].split()[2]) < 0.9999, err  # untagged: "unknown" views
    for extra, words in ((["--views", "front"], "1 view tags for 3 photos"),
                         (["--views", "front,,side"], "one non-empty tag each")):
        status, _, err = search_script(monkeypatch, capsys, fake_backbone, tmp_path / "idx", *a.images, *extra)
        assert status == 2 and words in err and len(err.strip().splitlines()) == 1, err
    status, _, err = search_script(monkeypatch, capsys, fake_backbone, tmp_path / "idx", "--id", "a1",
                                   "--views", "front")
    assert status == 2 and "--views tags the query photos" in err, err


def test_service_views_field(tagged):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from setenc.search.service import create_app

    _, cat_path, idx = tagged
    a = load_catalog(cat_path)[5]
    client = TestClient(create_app(idx))
    files = [("photos", (p.name, p.read_bytes(), "image/png")) for p in a.images]
    r = client.post("/search", files=files, data={"k": "1", "views": ",".join(a.views)})
    assert r.status_code == 200, r.text
    want = idx.search(list(a.images), 1, views=a.views)[0]
    assert r.json()["hits"] == [{"id": want[0], "score": pytest.approx(want[1], abs=1e-5)}] and want[0] == a.id
    r = client.post("/search", files=files, data={"views": "front"})
    assert r.status_code == 400 and "1 view tags for 3 photos" in r.json()["detail"]
