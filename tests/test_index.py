"""FAISS export and search: results equal brute force, exports are atomic, and wrong inputs are refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import setenc.search.ann as ann
import setenc.search.index as index_mod
from setenc.catalogs import load_catalog
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.search.index import SetIndex, build_index, encoder_from_manifest, export_index
from setenc.encoder import SetEncoder

from conftest import REPO, FakeBackbone


def colour_catalog(root: Path, n: int, groups: int = 5, seed: int = 0, name: str = "catalog.jsonl") -> Path:
    """n articles of 1-3 solid-colour photos; articles of a group share a base colour, so vectors cluster."""
    rng = np.random.default_rng(seed)
    base = rng.random((groups, 3))
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for a in range(n):
        images = []
        for j in range(1 + a % 3):
            colour = np.clip(base[a % groups] + rng.normal(0, 0.15, 3), 0, 1)
            path = root / "img" / f"a{a}_{j}.png"
            if not path.exists():
                Image.fromarray(np.full((8, 8, 3), colour * 255, np.uint8)).save(path)
            images.append(f"img/{path.name}")
        lines.append({"id": f"a{a}", "images": images, "group": f"g{a % groups}", "title": f"article {a}"})
    path = root / name
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@pytest.fixture
def encoder(fake_backbone) -> SetEncoder:
    return SetEncoder.parameter_free(fake_backbone)


def export(encoder, catalog, tmp_path, out="idx", **kw) -> dict:
    return export_index(encoder, catalog, tmp_path / "cache", tmp_path / out, progress=False, **kw)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, scores = [], []
    for q in queries:
        s = [float(np.dot(v, q)) for v in vectors]
        order = sorted(range(len(s)), key=lambda i: -s[i])[:k]
        rows.append(order)
        scores.append([s[i] for i in order])
    return np.array(rows), np.array(scores)


def test_round_trip_equals_brute_force(encoder, tmp_path):
    cat_path = colour_catalog(tmp_path, 30)
    manifest = export(encoder, cat_path, tmp_path)
    cat = load_catalog(cat_path)
    idx = SetIndex.load(tmp_path / "idx", encoder, expansion="none")
    assert idx.ids == cat.ids and manifest["count"] == len(idx) == 30 and manifest["dropped"] == []
    assert manifest["catalog"] == str(cat_path.resolve()) and manifest["backbone"]["id"] == "fake:v1"
    direct = encoder.encode([list(a.images) for a in cat])  # encoded here, not read back from the export
    np.testing.assert_allclose(idx.vectors, direct, atol=1e-6)
    rng = np.random.default_rng(1)
    queries = np.concatenate([direct[:5], rng.normal(size=(5, direct.shape[1]))]).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids, scores = idx.search_batch(queries, k=7)
    want_rows, want_scores = brute_force(direct, queries, 7)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    clear = np.abs(np.diff(want_scores, axis=1)).min(1) > 1e-4  # queries without near-ties in their top 7
    assert clear.sum() >= 5
    assert (ids[clear] == np.array(cat.ids, dtype=object)[want_rows[clear]]).all()


def test_photo_set_query_equals_vector_query(encoder, tmp_path):
    cat = load_catalog(colour_catalog(tmp_path, 12))
    export(encoder, cat, tmp_path)
    idx = SetIndex.load(tmp_path / "idx", encoder, expansion="none")
    photos = list(cat[4].images)
    by_photos = idx.search(photos, k=5)
    by_pil = idx.search([Image.open(p) for p in photos], k=5)
    by_embeddings = idx.search(encoder.embed_photos(photos), k=5)  # (n, D) photo vectors
    by_vector = idx.search(encoder.encode([photos])[0], k=5)
    assert [i for i, _ in by_photos] == [i for i, _ in by_pil] == [i for i, _ in by_embeddings] == \
        [i for i, _ in by_vector]
    np.testing.assert_allclose([s for _, s in by_photos], [s for _, s in by_vector], atol=1e-5)
    assert by_photos[0][0] == "a4" and by_photos[0][1] == pytest.approx(1.0, abs=1e-5)


def test_unnormalised_vector_and_k_beyond_count(encoder, tmp_path):
    export(encoder, colour_catalog(tmp_path, 4), tmp_path)
    idx = SetIndex.load(tmp_path / "idx", expansion="none")
    v = np.asarray(idx.vectors[2], np.float32)
    hits = idx.search(3.0 * v, k=10)
    assert len(hits) == 4 and hits[0] == ("a2", pytest.approx(1.0, abs=1e-5))
    ids, scores = idx.search_batch(v[None], k=6)
    assert ids[0, 4] is None and scores[0, 5] == -np.inf
    with pytest.raises(SetencError, match="8-d article vectors"):
        idx.search(np.ones(5, np.float32))


class OtherBackbone(FakeBackbone):
    id = "fake:v2"


class NarrowBackbone(FakeBackbone):
    id = "fake:narrow"
    dim = 4


@pytest.mark.parametrize("backbone, words", [(OtherBackbone, "fake:v2"), (NarrowBackbone, "4-d")])
def test_mismatched_encoder_refused(encoder, tmp_path, backbone, words):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    with pytest.raises(CheckpointError, match=f"{words}.*re-export"):
        SetIndex.load(tmp_path / "idx", SetEncoder.parameter_free(backbone()))


def test_missing_file_named(encoder, tmp_path):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    (tmp_path / "idx" / "ids.json").unlink()
    with pytest.raises(CheckpointError, match=r"ids\.json: missing.*re-export"):
        SetIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("name", ["vectors.npy", "index.faiss"])
def test_corrupt_file_refused(encoder, tmp_path, name):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    path = tmp_path / "idx" / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{name}: sha256 differs"):
        SetIndex.load(tmp_path / "idx")


def test_append_equals_full_rebuild(encoder, tmp_path):
    full = colour_catalog(tmp_path, 30)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(full.read_text().splitlines(keepends=True)[:18]))
    export(encoder, part, tmp_path, out="grown")
    manifest = export(encoder, full, tmp_path, out="grown", append=True)
    export(encoder, full, tmp_path, out="rebuilt")
    grown, rebuilt = SetIndex.load(tmp_path / "grown"), SetIndex.load(tmp_path / "rebuilt")
    assert grown.ids == rebuilt.ids and manifest["count"] == 30
    np.testing.assert_array_equal(grown.vectors, rebuilt.vectors)
    queries = np.asarray(rebuilt.vectors[::3], np.float32)
    for a, b in zip(grown.search_batch(queries, 5), rebuilt.search_batch(queries, 5)):
        np.testing.assert_array_equal(a, b)
    again = export(encoder, full, tmp_path, out="grown", append=True)  # nothing new: same rows
    assert again["count"] == 30 and SetIndex.load(tmp_path / "grown").ids == rebuilt.ids
    with pytest.raises(SetencError, match="append"):
        export(encoder, full, tmp_path, out="grown", append=True, index="hnsw")


def test_float16_export(encoder, tmp_path):
    export(encoder, colour_catalog(tmp_path, 10), tmp_path, dtype="float16")
    idx = SetIndex.load(tmp_path / "idx", expansion="none")
    assert idx.vectors.dtype == np.float16
    v = np.asarray(idx.vectors, np.float32)  # rounded to float16: the index holds exactly these values
    q = v / np.linalg.norm(v, axis=1, keepdims=True)  # queries are normalised before searching
    _, scores = idx.search_batch(v, k=3)
    np.testing.assert_allclose(scores, brute_force(v, q, 3)[1], atol=1e-6)


def clustered(n: int, d: int, clusters: int, seed: int, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + noise * rng.normal(size=(n, d))
    q = centres[rng.integers(clusters, size=100)] + noise * rng.normal(size=(100, d))
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(x), unit(q)


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "IVF16,SQ8"])
def test_approximate_recall(kind):
    x, q = clustered(3000, 32, 40, seed=0)
    exact = q @ x.T  # (100, 3000)
    index, params = build_index(x, kind)
    _, rows = index.search(q, 1)
    recall = np.mean(rows[:, 0] == exact.argmax(1))
    assert recall >= 0.9, (kind, params, recall)


@pytest.mark.parametrize("kind", ["ivf", "ivfpq", "PCA16,IVF8,PQ4"])
def test_sharded_build_equals_single_build(tmp_path, monkeypatch, kind):
    """Shards encoded by worker processes and merged in row order hold the single build's lists: same top-k."""
    monkeypatch.setattr(ann, "ADD_CHUNK", 300)  # shards of several chunks
    x, q = clustered(2000, 32, 20, seed=2)
    np.save(tmp_path / "v.npy", x)
    single, params = build_index(x, kind)
    ann.set_search_params(single, {"nprobe": 4})
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    assert ann._file_prefix(mapped) and ann._file_prefix(mapped[:1000]) and not ann._file_prefix(mapped[500:])
    for vectors in (x, mapped):  # a temporary copy / the caller's file
        sharded, sharded_params = build_index(vectors, kind, shards=3, workers=2)
        ann.set_search_params(sharded, {"nprobe": 4})
        assert sharded.ntotal == 2000 and sharded_params == params
        for a, b in zip(single.search(q, 10), sharded.search(q, 10)):
            np.testing.assert_array_equal(a, b)


def test_ivfpq_refined_over_every_row_equals_exact():
    """With every list probed and every row a candidate, re-scoring on the stored vectors is exact search."""
    x, q = clustered(600, 32, 10, seed=3)
    index, _ = build_index(x, "ivfpq")
    ann.set_search_params(index, {"nprobe": faiss_nlist(index)})
    scores, rows = ann.search_refined(index, x, q[:20], 5, factor=600 // 5)
    reference = brute_force(x, q[:20], 5)
    np.testing.assert_array_equal(rows, reference[0])
    np.testing.assert_allclose(scores, reference[1], atol=1e-5)


def test_setindex_refines_ivfpq_hits_on_stored_vectors():
    x, q = clustered(600, 32, 10, seed=4)
    index, params = build_index(x, "ivfpq")
    idx = SetIndex(index, [f"a{i}" for i in range(600)], {"dim": 32, "index": {"type": "ivfpq", "params": params}}, x)
    ids, scores = idx.search_batch(q[:10], k=3)
    want_scores, want_rows = ann.search_refined(index, x, q[:10], 3)
    assert ids.tolist() == [[f"a{r}" for r in row] for row in want_rows]
    np.testing.assert_allclose(scores, want_scores, atol=1e-6)


def faiss_nlist(index) -> int:
    import faiss

    return faiss.extract_index_ivf(index).nlist


def test_sharded_build_refuses_non_ivf():
    x, _ = clustered(300, 16, 5, seed=0)
    with pytest.raises(SetencError, match="needs an IVF index"):
        build_index(x, "hnsw", shards=2)


def test_build_from_float16_memmap_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(ann, "ADD_CHUNK", 128)  # several chunks on a small array
    x, q = clustered(1000, 16, 10, seed=1)
    np.save(tmp_path / "v.npy", x.astype(np.float16))
    half = np.load(tmp_path / "v.npy", mmap_mode="r")
    index, _ = build_index(half, "flat")
    reference = brute_force(np.asarray(half, np.float32), q[:10], 5)
    assert index.ntotal == 1000
    scores, rows = index.search(q[:10], 5)
    np.testing.assert_array_equal(rows, reference[0])
    np.testing.assert_allclose(scores, reference[1], atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_export_round_trip(encoder, tmp_path, kind):
    export(encoder, colour_catalog(tmp_path, 40), tmp_path, index=kind)
    idx = SetIndex.load(tmp_path / "idx", encoder, expansion="none")
    assert idx.manifest["index"]["type"] == kind and idx.manifest["index"]["params"]
    own = [idx.search(np.asarray(idx.vectors[i]), k=1)[0][0] for i in range(0, 40, 4)]
    assert own == [f"a{i}" for i in range(0, 40, 4)]


def test_bad_factory_string(encoder, tmp_path):
    with pytest.raises(SetencError, match="factory string"):
        export(encoder, colour_catalog(tmp_path, 6), tmp_path, index="NotAnIndex42")


def test_dropped_articles_listed(encoder, tmp_path):
    cat_path = colour_catalog(tmp_path, 6)
    (tmp_path / "img" / "broken.jpg").write_text("not a photo")
    with open(cat_path, "a") as f:
        f.write(json.dumps({"id": "broken", "images": ["img/broken.jpg"]}) + "\n")
    manifest = export(encoder, cat_path, tmp_path)
    assert manifest["dropped"] == ["broken"] and manifest["count"] == 6


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_crash_during_write_keeps_previous_export(encoder, tmp_path, monkeypatch):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    before = snapshot(tmp_path / "idx")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(index_mod.np, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        export(encoder, colour_catalog(tmp_path, 9, name="more.jsonl"), tmp_path)
    monkeypatch.undo()
    assert snapshot(tmp_path / "idx") == before
    assert SetIndex.load(tmp_path / "idx").ids == [f"a{i}" for i in range(6)]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_crash_between_renames_recovers(encoder, tmp_path, monkeypatch):
    export(encoder, colour_catalog(tmp_path, 6), tmp_path)
    before = snapshot(tmp_path / "idx")
    real_rename, calls = os.rename, []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # old export moved away, new one not yet in place
            raise RuntimeError("killed")
        real_rename(src, dst)

    monkeypatch.setattr(index_mod.os, "rename", rename)
    with pytest.raises(RuntimeError, match="killed"):
        export(encoder, colour_catalog(tmp_path, 9, name="more.jsonl"), tmp_path)
    monkeypatch.undo()
    assert not (tmp_path / "idx").exists()
    assert SetIndex.load(tmp_path / "idx").ids == [f"a{i}" for i in range(6)]
    assert snapshot(tmp_path / "idx") == before


def test_encoder_rebuilt_from_recorded_checkpoint(fake_backbone, tmp_path):
    from setenc.heads.model import create_head

    ckpt = SetEncoder(create_head("proj", fake_backbone.dim, out_dim=6), {"name": "fake", "kwargs": {},
                      "id": fake_backbone.id}, fake_backbone.dim).save(tmp_path / "head.pt")
    enc = SetEncoder.from_pretrained(ckpt, backbone=fake_backbone)
    manifest = export(enc, colour_catalog(tmp_path, 6), tmp_path, checkpoint_path=ckpt)
    assert manifest["dim"] == 6 and manifest["checkpoint"]["sha256"] == enc.checkpoint_sha256
    rebuilt = encoder_from_manifest(manifest)
    assert rebuilt.head.config == enc.head.config and rebuilt.checkpoint_sha256 == enc.checkpoint_sha256
    with pytest.raises(CheckpointError, match="head"):  # a parameter-free encoder is not this trained head
        SetIndex.load(tmp_path / "idx", SetEncoder.parameter_free(fake_backbone))
    ckpt.write_bytes(ckpt.read_bytes() + b"changed")
    idx = SetIndex.load(tmp_path / "idx")
    assert idx.search(np.asarray(idx.vectors[0]), k=1)[0][0] == "a0"  # vector queries need no encoder
    with pytest.raises(CheckpointError, match="missing or changed"):
        idx.search(np.zeros((2, fake_backbone.dim), np.float32) + 0.1)


@pytest.mark.slow
def test_scripts_export_and_search(tmp_path):
    """The real scripts with the offline efficientnet-lite0 backbone on a 6-article catalog."""
    cat = colour_catalog(tmp_path, 6)
    env = {**os.environ, "SETENC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, *a], cwd=REPO, env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    r = run("scripts/export.py", "--catalog", str(cat), "--out", str(tmp_path / "idx"), "--runtime", "torch")
    assert r.returncode == 0, r.stderr
    photos = [str(tmp_path / "img" / f"a5_{j}.png") for j in range(3)]
    r = run("scripts/search.py", str(tmp_path / "idx"), *photos, "-k", "3", "--png", str(tmp_path / "hits.png"))
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[1].split()
    assert first[:2] == ["1", "a5"] and "article 5" in r.stdout
    assert Image.open(tmp_path / "hits.png").size[0] > 100
    r = run("scripts/search.py", str(tmp_path / "nowhere"), photos[0])
    assert r.returncode == 2 and "re-export" in r.stderr
