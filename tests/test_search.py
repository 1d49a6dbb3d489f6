"""Two-stage and multi-vector search, and catalogue edits: each equals its brute-force or rebuilt reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from setenc.search.ann import build_index
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.search.export import delete_articles, export_index
from setenc.heads.model import create_head
from setenc.search.index import SetIndex
from setenc.matching.matchers import MATCHERS, create_matcher, pairwise_scores
from setenc.heads.sets import pad_sets
from setenc.search.store import PhotoStore

from test_index import colour_catalog

UNORDERED = [n for n in MATCHERS.names() if not MATCHERS.get(n).needs_views]


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_sets(n: int, d: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [unit(rng.normal(size=(int(rng.integers(1, 5)), d))) for _ in range(n)]


def random_index(n: int = 40, d: int = 16, seed: int = 0) -> SetIndex:
    """A flat SetIndex over n random photo sets, with the mean head as encoder and the photos stored."""
    sets = random_sets(n, d, seed)
    enc = SetEncoder(create_head("mean", d).eval(), {"name": "rand", "kwargs": {}, "id": "rand"}, d)
    vecs = enc.encode_sets(sets)
    index, params = build_index(vecs)
    manifest = {"dim": d, "photo_dim": d, "index": {"type": "flat", "params": params}}
    return SetIndex(index, [f"a{i}" for i in range(n)], manifest, vecs, enc, PhotoStore.from_sets(sets, d))


def ranking(scores: np.ndarray) -> np.ndarray:
    """Rows best first, ties to the lower row."""
    return np.lexsort((np.arange(len(scores)), -scores))


@pytest.mark.parametrize("name", UNORDERED)
def test_rerank_with_every_candidate_equals_exhaustive_matching(name):
    idx = random_index()
    gx, gmask = pad_sets(idx.photos.sets(range(len(idx))))
    for q in random_sets(5, 16, seed=1):
        qx, qmask = pad_sets([q])
        exhaustive = pairwise_scores(name, qx, qmask, gx, gmask)[0].numpy()  # (G,)
        want = ranking(exhaustive)
        hits = idx.search(q, k=len(idx), rerank=name, candidates=len(idx))
        assert [i for i, _ in hits] == [f"a{r}" for r in want]
        np.testing.assert_allclose([s for _, s in hits], exhaustive[want], atol=1e-6)


def test_fusion_weight_one_is_the_set_vector_search_and_half_is_the_mean():
    idx = random_index()
    for q in random_sets(5, 16, seed=2):
        plain = idx.search(q, k=10)
        fused = idx.search(q, k=10, rerank="chamfer", candidates=len(idx), weight=1.0)
        assert [i for i, _ in fused] == [i for i, _ in plain]
        np.testing.assert_allclose([s for _, s in fused], [s for _, s in plain], atol=1e-6)
        vec = idx.vectorize([q])[0]
        qx, qmask = pad_sets([q])
        gx, gmask = pad_sets(idx.photos.sets(range(len(idx))))
        want = 0.3 * (np.asarray(idx.vectors) @ vec) + 0.7 * pairwise_scores("chamfer", qx, qmask, gx, gmask)[0].numpy()
        half = idx.search(q, k=5, rerank="chamfer", candidates=len(idx), weight=0.3)
        assert [i for i, _ in half] == [f"a{r}" for r in ranking(want)[:5]]


def test_rerank_reorders_only_the_set_vector_candidates():
    idx = random_index()
    q = random_sets(1, 16, seed=3)[0]
    top = {i for i, _ in idx.search(q, k=8)}
    reranked = idx.search(q, k=8, rerank=create_matcher("linear", m=2), candidates=8)
    assert {i for i, _ in reranked} == top
    assert len(idx.search(q, k=3, rerank="recursive", candidates=1)) == 3  # never fewer hits than k


def test_rerank_refuses_what_it_cannot_do():
    idx = random_index()
    q = random_sets(1, 16, seed=4)[0]
    with pytest.raises(SetencError, match="needs view tags"):
        idx.search(q, rerank="ordered")
    with pytest.raises(SetencError, match="unknown matcher 'nope'"):
        idx.search(q, rerank="nope")
    with pytest.raises(SetencError, match=r"weight 2.0 must be in \[0, 1\]"):
        idx.search(q, rerank="chamfer", weight=2.0)
    with pytest.raises(SetencError, match="not a single vector"):
        idx.search(np.asarray(idx.vectors[0]), rerank="chamfer")
    with pytest.raises(SetencError, match=r"non-empty finite \(n, 16\) array, got shape \(2, 5\)"):
        idx.search_photos(np.ones((2, 5), np.float32))
    with pytest.raises(SetencError, match="k=0"):
        idx.search(q, k=0)
    idx.photos = None
    with pytest.raises(SetencError, match="photo vectors.*re-export"):
        idx.search(q, rerank="chamfer")


@pytest.mark.parametrize("aggregate", ["max", "chamfer"])
def test_multivector_equals_brute_force(aggregate):
    idx = random_index(n=30)
    reference = create_matcher("chamfer")
    for q in random_sets(4, 16, seed=5):
        scores = []
        for s in idx.photos.sets(range(len(idx))):
            S = q @ s.T  # (n, m) cosines
            scores.append(S.max() if aggregate == "max" else reference.score(S))
        want = ranking(np.array(scores))[:7]
        hits = idx.search_photos(q, k=7, aggregate=aggregate, depth=int(idx.photos.offsets[-1]))
        assert [i for i, _ in hits] == [f"a{r}" for r in want]  # one hit per article
        np.testing.assert_allclose([s for _, s in hits], np.array(scores)[want], atol=1e-5)


def test_multivector_max_sim_finds_its_own_photo():
    idx = random_index(n=30)
    own = idx.photos.set(12)[:1]  # one of article 12's photos
    assert idx.search_photos(own, k=1, depth=3)[0] == ("a12", pytest.approx(1.0, abs=1e-5))


def test_similar_leaves_the_article_out():
    idx = random_index()
    hits = idx.similar("a5", k=4)
    plain = [i for i, _ in idx.search(np.asarray(idx.vectors[5]), k=5) if i != "a5"][:4]
    assert [i for i, _ in hits] == plain and len(hits) == 4
    assert "a5" not in [i for i, _ in idx.similar("a5", k=4, rerank="chamfer", candidates=40)]
    with pytest.raises(SetencError, match="'zz' is not in this export"):
        idx.similar("zz")
    assert idx.search_photos(idx.article_photos("a5"), k=1)[0][0] == "a5"


# -- catalogue edits on real exports ---------------------------------------------------------------------
@pytest.fixture
def encoder(fake_backbone) -> SetEncoder:
    return SetEncoder.parameter_free(fake_backbone)


def export(encoder, catalog, tmp_path, out="idx", **kw) -> dict:
    return export_index(encoder, catalog, tmp_path / "cache", tmp_path / out, progress=False, **kw)


def assert_same_export(a: SetIndex, b: SetIndex) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.photos.photos, b.photos.photos)
    np.testing.assert_array_equal(a.photos.offsets, b.photos.offsets)
    queries = np.asarray(b.vectors[::2], np.float32)
    for x, y in zip(a.search_batch(queries, 5), b.search_batch(queries, 5)):
        np.testing.assert_array_equal(x, y)
    photo_query = b.photos.set(1)
    assert a.search(photo_query, 5, rerank="chamfer") == b.search(photo_query, 5, rerank="chamfer")


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_delete_then_search_equals_rebuilt_export(encoder, tmp_path, kind):
    full = colour_catalog(tmp_path, 20)
    export(encoder, full, tmp_path, index=kind)
    manifest = delete_articles(tmp_path / "idx", ["a3", "a7", "a19"])
    rest = write_lines(tmp_path / "rest.jsonl", [x for x in lines_of(full) if x["id"] not in {"a3", "a7", "a19"}])
    export(encoder, rest, tmp_path, out="rebuilt", index=kind)
    edited = SetIndex.load(tmp_path / "idx")  # verifies every checksum
    assert manifest["count"] == 17 and edited.manifest["index"]["type"] == kind
    assert_same_export(edited, SetIndex.load(tmp_path / "rebuilt"))


def test_delete_refuses_unknown_ids_and_emptying(encoder, tmp_path):
    export(encoder, colour_catalog(tmp_path, 4), tmp_path)
    with pytest.raises(SetencError, match="not in the export: nope"):
        delete_articles(tmp_path / "idx", ["a1", "nope"])
    with pytest.raises(SetencError, match="empty"):
        delete_articles(tmp_path / "idx", ["a0", "a1", "a2", "a3"])
    assert len(SetIndex.load(tmp_path / "idx")) == 4


def test_update_then_search_equals_rebuilt_export(encoder, tmp_path):
    full = colour_catalog(tmp_path, 20)
    export(encoder, full, tmp_path)
    lines = lines_of(full)
    changed = {**lines[3], "images": lines[10]["images"] + lines[4]["images"]}  # new photos for a3
    new = {"id": "a20", "images": lines[8]["images"], "group": "g9"}
    manifest = export(encoder, write_lines(tmp_path / "changes.jsonl", [changed, new]), tmp_path, update=True)
    assert manifest["catalog"] == str(full.resolve()) and manifest["count"] == 21  # the full catalogue stays named
    assert manifest["expansion"] == "dba5+qe2"  # kept: the change list (2 articles, 1 a group) is not the catalogue
    v2 = write_lines(tmp_path / "v2.jsonl", lines[:3] + [changed] + lines[4:] + [new])
    export(encoder, v2, tmp_path, out="rebuilt")
    assert_same_export(SetIndex.load(tmp_path / "idx"), SetIndex.load(tmp_path / "rebuilt"))


def test_delete_crash_keeps_previous_export(encoder, tmp_path, monkeypatch):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        delete_articles(tmp_path / "idx", ["a2"])
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "idx").iterdir()} == before


def strip_photos(folder: Path) -> None:
    """Make an export look like one written before photo vectors were stored."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("photos.npy", "photo_offsets.npy"):
        (folder / name).unlink()
        del manifest["files"][name]
    manifest.pop("photos")
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_old_export_without_photo_vectors(encoder, tmp_path):
    cat = colour_catalog(tmp_path, 8)
    export(encoder, cat, tmp_path)
    strip_photos(tmp_path / "idx")
    idx = SetIndex.load(tmp_path / "idx", encoder)
    v = np.asarray(idx.vectors[2], np.float32)
    assert idx.search(v, k=1)[0][0] == "a2" and idx.similar("a2", k=2)[0][0] != "a2"
    photos = [str(tmp_path / "img" / "a2_0.png")]
    with pytest.raises(SetencError, match="re-export"):
        idx.search(photos, rerank="chamfer")
    with pytest.raises(SetencError, match="re-export"):
        idx.search_photos(photos)
    delete_articles(tmp_path / "idx", ["a1"])  # edits still work; the export stays without photos
    assert SetIndex.load(tmp_path / "idx").photos is None


# -- batch queries and the scripts ---------------------------------------------------------------------
def write_queries(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_query_file_answers_equal_single_searches(encoder, tmp_path):
    from setenc.search.queries import answer, read_queries

    export(encoder, colour_catalog(tmp_path, 12), tmp_path)
    idx = SetIndex.load(tmp_path / "idx", encoder)
    v = np.asarray(idx.vectors[7], np.float32)
    qfile = write_queries(tmp_path / "q.jsonl", [
        {"photos": ["img/a4_0.png", "img/a4_1.png"], "qid": "four"}, {"id": "a2"}, "", {"vector": v.tolist()},
        {"photos": ["img/a5_0.png"]}])
    queries = read_queries(qfile, idx)
    results = list(answer(idx, queries, k=3))
    assert [r["line"] for r in results] == [1, 2, 4, 5] and results[0]["qid"] == "four"
    singles = [idx.search([tmp_path / "img/a4_0.png", tmp_path / "img/a4_1.png"], 3), idx.similar("a2", 3),
               idx.search(v, 3), idx.search([tmp_path / "img/a5_0.png"], 3)]
    for r, want in zip(results, singles):
        assert [(h["id"], h["score"]) for h in r["hits"]] == [(i, pytest.approx(s, abs=1e-5)) for i, s in want]
    reranked = list(answer(idx, [queries[0]], k=3, rerank="chamfer"))[0]
    assert [h["id"] for h in reranked["hits"]] == \
        [i for i, _ in idx.search([tmp_path / "img/a4_0.png", tmp_path / "img/a4_1.png"], 3, rerank="chamfer")]


@pytest.mark.parametrize("line, words", [
    ({"id": "zz"}, "'zz' is not in this export"),
    ({"photos": ["img/none.png"]}, "q.jsonl:2: photo not found"),
    ({"vector": [1, 2]}, "q.jsonl:2: 'vector' must be a list of 8"),
    ({"id": "a1", "vector": [1]}, "q.jsonl:2: a query is an object with exactly one of"),
    ("{oops", "q.jsonl:2: not valid JSON"),
])
def test_bad_query_line_is_named(encoder, tmp_path, line, words):
    from setenc.search.queries import read_queries

    export(encoder, colour_catalog(tmp_path, 4), tmp_path)
    idx = SetIndex.load(tmp_path / "idx", encoder)
    with pytest.raises(SetencError, match=words):
        read_queries(write_queries(tmp_path / "q.jsonl", [{"id": "a0"}, line]), idx)


def test_scripts_delete_and_batch_queries(encoder, tmp_path):
    """scripts/export.py --delete and scripts/search.py --queries in subprocesses (id and vector queries:
    no backbone needed); user errors are one line and exit status 2."""
    import subprocess
    import sys

    from conftest import REPO, script_env

    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=REPO, env=script_env(tmp_path / "cache"),  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("scripts/export.py", "--out", str(tmp_path / "idx"), "--delete", "a1", "a4")
    assert r.returncode == 0 and "2 articles, 4 left" in r.stdout, r.stderr
    v = np.asarray(SetIndex.load(tmp_path / "idx").vectors[0], np.float32)
    qfile = write_queries(tmp_path / "q.jsonl", [{"id": "a2"}, {"vector": v.tolist(), "qid": 7}])
    r = run("scripts/search.py", str(tmp_path / "idx"), "--queries", str(qfile), "-k", "2", "--out",
            str(tmp_path / "res.jsonl"))
    assert r.returncode == 0, r.stderr
    results = [json.loads(x) for x in (tmp_path / "res.jsonl").read_text().splitlines()]
    assert len(results) == 2 and results[1]["qid"] == 7 and results[1]["hits"][0]["id"] == "a0"
    assert "a2" not in [h["id"] for h in results[0]["hits"]]
    for extra in (["--rerank", "chamfer"], ["--multivector", "max"]):
        r = run("scripts/search.py", str(tmp_path / "idx"), "--id", "a3", "-k", "2", *extra)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 3 and " a3 " not in r.stdout, r.stderr
    r = run("scripts/export.py", "--out", str(tmp_path / "idx"), "--delete", "a1")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not in the export: a1" in r.stderr
    r = run("scripts/search.py", str(tmp_path / "idx"), "--queries", str(qfile), "--rerank", "chamfer")
    assert r.returncode == 2 and "q.jsonl:2: a vector query cannot be re-ranked" in r.stderr
