"""Exports of a fused encoder (photos + titles, `setenc.titles.fusion`): weight 1 ranks exactly as the photos-only
export and weight 0 as the titles alone, queries may be photos, a title or both, and an encoder whose fusion
differs from the export's is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from setenc.catalogs import load_catalog
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.search.export import export_index
from setenc.titles.fusion import Fusion
from setenc.heads.model import create_head
from setenc.search.index import SetIndex
from setenc.titles.encoders import create_text_encoder

from conftest import REPO
from test_index import colour_catalog

COLOURS, THINGS = ("red", "green", "blue", "black", "white"), ("shirt", "running shoe", "leather bag", "steel watch")


def titled_catalog(tmp_path, n: int = 20):
    """colour_catalog with descriptive titles; every 7th article (from a3) has none."""
    path = colour_catalog(tmp_path, n)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for a, line in enumerate(lines):
        line["title"] = None if a % 7 == 3 else f"{COLOURS[a % 5]} {THINGS[a % 4]} {a}"
        if line["title"] is None:
            del line["title"]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def setup(fake_backbone, tmp_path):
    cat_path = titled_catalog(tmp_path)
    cat = load_catalog(cat_path)
    text = create_text_encoder("tfidf").fit([a.title for a in cat])
    photos = SetEncoder.parameter_free(fake_backbone)

    def make(weight: float | None, out: str, **kw) -> SetIndex:
        enc = photos if weight is None else photos.with_fusion(Fusion(weight, text))
        export_index(enc, cat_path, tmp_path / "cache", tmp_path / out, progress=False, **kw)
        return SetIndex.load(tmp_path / out, enc)

    return make, cat, text, tmp_path


def top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.sort(scores)[::-1][:k]


def test_weight_one_ranks_exactly_as_the_photos_only_export(setup):
    make, cat, text, _ = setup
    plain, fused = make(None, "plain", expansion="none"), make(1.0, "fused")  # a late fusion is never expanded
    assert fused.manifest["expansion"] == "none" and fused.manifest["fusion"] == {"weight": 1.0, "text": text.id, "text_dim": text.dim}
    assert plain.manifest["fusion"] is None and fused.dim == plain.dim + text.dim
    np.testing.assert_array_equal(np.asarray(fused.vectors)[:, : plain.dim], plain.vectors)
    assert not np.asarray(fused.vectors)[:, plain.dim:].any()
    for a in cat.articles[:6]:
        q = list(a.images)
        want = plain.search(q, k=8)
        for got in (fused.search(q, k=8), fused.search(q, k=8, title=a.title)):  # w = 1: the title weighs nothing
            assert [i for i, _ in got] == [i for i, _ in want]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)
        got, want = fused.similar(a.id, k=5), plain.similar(a.id, k=5)
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def test_weight_zero_ranks_by_titles_alone(setup):
    make, cat, text, _ = setup
    idx = make(0.0, "titles")
    titles = text.encode([a.title for a in cat])  # zero rows for the untitled articles
    for query in ("red running shoe", "steel watch 7", "blue leather bag"):
        want = titles @ text.encode([query])[0]
        for hits in (idx.search(title=query, k=6), idx.search(list(cat[0].images), k=6, title=query)):
            np.testing.assert_allclose([s for _, s in hits], top(want, 6), atol=1e-5)
            assert all(abs(want[idx.row(i)] - s) < 1e-5 for i, s in hits)


def test_title_photo_and_both_queries_equal_brute_force(setup):
    make, cat, text, _ = setup
    idx = make(0.6, "mid")
    enc, vecs = idx.encoder, np.asarray(idx.vectors)
    a = cat[5]
    x = enc.embed_photos(list(a.images))
    for query, title in ((list(a.images), None), (None, "green shirt"), (list(a.images), "green shirt")):
        q = enc.encode_articles([None if query is None else x], [title])[0]
        assert np.linalg.norm(q) == pytest.approx(np.sqrt(0.6 * (query is not None) + 0.4 * (title is not None)))
        hits = idx.search(query, k=7, title=title)
        np.testing.assert_allclose([s for _, s in hits], top(vecs @ q, 7), atol=1e-5)
    hits = idx.search(title="green shirt", k=20, where={"group": "g1"})
    assert hits and all(i in {f"a{j}" for j in range(1, 20, 5)} for i, _ in hits)
    with pytest.raises(SetencError, match="no photos and no title"):
        idx.search(None, k=3)
    with pytest.raises(SetencError, match="vector query cannot take a title"):
        idx.search(vecs[0], k=3, title="shirt")


def test_an_encoder_with_another_fusion_is_refused(setup, fake_backbone):
    make, cat, text, tmp_path = setup
    make(None, "plain")
    make(0.6, "mid")
    fused = SetEncoder.parameter_free(fake_backbone).with_fusion(Fusion(0.6, text))
    for folder, enc, words in (("plain", fused, "encodes photos + titles (" + text.id + ", w=0.6) but this index "
                                "was exported with photos only"),
                               ("mid", SetEncoder.parameter_free(fake_backbone), "encodes photos only but this index "
                                "was exported with photos + titles"),
                               ("mid", fused.with_fusion(Fusion(0.5, text)), "w=0.5) but")):
        with pytest.raises(CheckpointError, match="re-export") as e:
            SetIndex.load(tmp_path / folder, enc)
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="photos only"):  # an edit is refused the same way
        export_index(SetEncoder.parameter_free(fake_backbone), titled_catalog(tmp_path), tmp_path / "cache",
                     tmp_path / "mid", progress=False, append=True)
    plain = SetIndex.load(tmp_path / "plain")
    with pytest.raises(SetencError, match="no title fusion"):
        plain.search(title="red shirt")


def test_fused_checkpoint_export_and_search_script(fake_backbone, tmp_path):
    cat_path = titled_catalog(tmp_path)
    text = create_text_encoder("tfidf").fit([a.title for a in load_catalog(cat_path)])
    spec = {"name": "fake", "kwargs": {}, "id": fake_backbone.id}
    ckpt = SetEncoder(create_head("mean", fake_backbone.dim), spec, fake_backbone.dim).with_fusion(
        Fusion(0.5, text)).save(tmp_path / "fused.pt")
    enc = SetEncoder.from_pretrained(ckpt, backbone=fake_backbone)
    export_index(enc, cat_path, tmp_path / "cache", tmp_path / "idx", progress=False, checkpoint_path=ckpt)
    export_index(SetEncoder.parameter_free(fake_backbone), cat_path, tmp_path / "cache", tmp_path / "plain",
                 progress=False)
    idx = SetIndex.load(tmp_path / "idx")  # the fused encoder rebuilt from the recorded checkpoint
    assert idx.search(title="blue leather bag 2", k=1)[0][0] == "a2"
    env = {**os.environ, "SETENC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "scripts/search.py", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run(str(tmp_path / "idx"), "--title", "blue leather bag 2", "-k", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:2] == ["1", "a2"] and "blue leather bag 2" in r.stdout
    r = run(str(tmp_path / "idx"), "--title", "blue leather bag 2", "-k", "3", "--where", "group=g3")
    assert r.returncode == 0, r.stderr
    assert {line.split()[1] for line in r.stdout.splitlines()[1:]} <= {"a3", "a8", "a13", "a18"}
    for args, words in (([str(tmp_path / "plain"), "--title", "red shirt"], "no title fusion"),
                        ([str(tmp_path / "idx"), "--title", "red", "--id", "a1"], "exactly one"),
                        ([str(tmp_path / "idx"), "--title", " "], "--title is empty"),
                        ([str(tmp_path / "plain"), "--checkpoint", str(ckpt), "--id", "a1"], "photos + titles")):
        r = run(*args)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_service_title_and_where(setup):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from setenc.search.service import create_app

    make, cat, _, _ = setup
    idx = make(0.6, "mid")
    client = TestClient(create_app(idx))
    body = client.get("/health").json()
    assert body["fusion"]["weight"] == 0.6 and body["metadata_keys"] == ["group"]
    r = client.post("/search", data={"title": "red shirt", "k": "4", "where": ["group=g0", "group=g2"]})
    assert r.status_code == 200, r.text
    want = idx.search(title="red shirt", k=4, where={"group": ["g0", "g2"]})
    assert [h["id"] for h in r.json()["hits"]] == [i for i, _ in want]
    r = client.get("/articles/a1/similar", params={"k": 3, "where": "group=g2"})
    assert [h["id"] for h in r.json()["hits"]] == [i for i, _ in idx.similar("a1", 3, where={"group": "g2"})]
    r = client.get("/articles/a1/similar", params={"where": "colour=red"})
    assert r.status_code == 400 and "unknown key 'colour'" in r.json()["detail"]
    r = client.post("/search", data={"title": "red shirt", "where": "group"})
    assert r.status_code == 400 and "not KEY=VALUE" in r.json()["detail"]


def test_query_file_titles_and_where(setup):
    from setenc.search.queries import answer, read_queries

    make, cat, _, tmp_path = setup
    idx = make(0.6, "mid")
    photos = [str(p.relative_to(tmp_path)) for p in cat[4].images]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(x) + "\n" for x in (
        {"title": "red shirt"}, {"photos": photos, "title": "red shirt", "where": {"group": "g2"}},
        {"photos": photos}, {"id": "a1", "where": {"group": ["g3", "g4"]}})))
    got = [[h["id"] for h in r["hits"]] for r in answer(idx, read_queries(tmp_path / "q.jsonl", idx), k=4)]
    want = [idx.search(title="red shirt", k=4), idx.search(list(cat[4].images), 4, title="red shirt",
                                                           where={"group": "g2"}),
            idx.search(list(cat[4].images), 4), idx.similar("a1", 4, where={"group": ["g3", "g4"]})]
    assert got == [[i for i, _ in w] for w in want]
    for line, words in (({"title": "x", "id": "a1"}, "with photos or alone"), ({"title": ""}, "non-empty"),
                        ({"id": "a1", "where": {"nope": 1}}, "unknown key 'nope'")):
        (tmp_path / "bad.jsonl").write_text(json.dumps(line) + "\n")
        with pytest.raises(SetencError, match="bad.jsonl:1") as e:
            read_queries(tmp_path / "bad.jsonl", idx)
        assert words in str(e.value)


@pytest.mark.slow
def test_export_script_with_a_fused_checkpoint(tmp_path):
    """scripts/export.py --checkpoint FUSED.pt with the offline efficientnet-lite0 backbone, then --title search."""
    from setenc.photos import create_backbone

    cat_path = titled_catalog(tmp_path, 8)
    backbone = create_backbone("efficientnet-lite0", runtime="torch")
    text = create_text_encoder("tfidf").fit([a.title for a in load_catalog(cat_path)])
    spec = {"name": backbone.name, "kwargs": {}, "id": backbone.id}
    ckpt = SetEncoder(create_head("mean", backbone.dim), spec, backbone.dim).with_fusion(Fusion(0.7, text)).save(
        tmp_path / "fused.pt")
    env = {**os.environ, "SETENC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=REPO, env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    r = run("scripts/export.py", "--checkpoint", str(ckpt), "--catalog", str(cat_path), "--out", str(tmp_path / "idx"),
            "--runtime", "torch")
    assert r.returncode == 0, r.stderr
    assert f"+ titles ({text.id}, w=0.7)" in r.stdout and "metadata group" in r.stdout
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["dim"] == backbone.dim + text.dim and manifest["fusion"]["weight"] == 0.7
    r = run("scripts/search.py", str(tmp_path / "idx"), *[str(p) for p in load_catalog(cat_path)[2].images],
            "--title", "blue leather bag 2", "-k", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:2] == ["1", "a2"]
