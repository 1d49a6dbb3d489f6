"""Metadata filters (`where=`): every index kind returns what brute-force filtering of an exact search returns,
the metadata survives export edits and is checksummed, and bad filters are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from setenc.search.ann import build_index, ivf_lists
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.search.export import delete_articles, export_index
from setenc.search.filters import Metadata, parse_where
from setenc.heads.model import create_head
from setenc.search.index import SetIndex
from setenc.search.store import PhotoStore

from conftest import REPO
from test_index import colour_catalog
from test_search import random_sets, ranking

N, D = 600, 16
COLOURS = ("red", "green", "blue")


def metadata(n: int = N) -> Metadata:
    """group g0..g9 (10 % each), colour (a third each), 'rare' on 1 % of rows, 'size' on two thirds."""
    return Metadata({"group": [f"g{i % 10}" for i in range(n)], "colour": [COLOURS[i % 3] for i in range(n)],
                     "rare": ["yes" if i % 100 == 7 else "no" for i in range(n)],
                     "size": [str(40 + i % 4) if i % 3 else None for i in range(n)]})


def filtered_index(kind: str, n: int = N, seed: int = 0) -> SetIndex:
    sets = random_sets(n, D, seed)
    enc = SetEncoder(create_head("mean", D).eval(), {"name": "rand", "kwargs": {}, "id": "rand"}, D)
    vecs = enc.encode_sets(sets)
    index, params = build_index(vecs, kind)
    manifest = {"dim": D, "photo_dim": D, "index": {"type": kind, "params": params}}
    return SetIndex(index, [f"a{i}" for i in range(n)], manifest, vecs, enc, PhotoStore.from_sets(sets, D),
                    metadata(n))


def brute(idx: SetIndex, queries: np.ndarray, k: int, mask: np.ndarray) -> list[list[str]]:
    out = []
    for q in queries:
        s = np.where(mask, np.asarray(idx.vectors) @ q, -np.inf)
        out.append([idx.ids[r] for r in ranking(s)[: min(k, int(mask.sum()))]])
    return out


def queries(idx: SetIndex, n: int = 8, seed: int = 1) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, idx.dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


SELECTIVE = [{"rare": "yes"}, {"group": "g3"}, {"group": ["g1", "g2"], "colour": "red"}]
BROAD = [{"colour": ["red", "green"]}, {"size": ["40", 41, "42", "43"]}]


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "ivfpq"])
@pytest.mark.parametrize("where", SELECTIVE + BROAD, ids=lambda w: ",".join(w))
def test_where_equals_brute_force_filtering(kind, where):
    idx = filtered_index(kind)
    if where in BROAD:  # a broad filter searches like an unfiltered query: exact only with exact parameters
        idx.set_params(**{"hnsw": {"efSearch": N}, "flat": {}}.get(kind, {"nprobe": ivf_lists(N)[0]}))
    if kind == "ivfpq" and where in BROAD:
        pytest.skip("PQ codes rank a broad filter's candidates approximately (as unfiltered): see the recall test")
    q = queries(idx)
    mask = idx.metadata.mask(where, len(idx))
    ids, scores = idx.search_batch(q, k=10, where=where)
    want = brute(idx, q, 10, mask)
    for got, exp, s in zip(ids, want, scores):
        assert [i for i in got if i is not None] == exp
        assert np.isfinite(s[: len(exp)]).all() and np.isneginf(s[len(exp):]).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "ivfpq"])
def test_selective_filters_are_exact_at_default_parameters_and_broad_ones_keep_recall(kind):
    """A filter's share divides nprobe / efSearch (or HNSW scans its storage), so few matching rows never mean
    few hits; default parameters."""
    idx = filtered_index(kind)
    q = queries(idx, 20)
    for where in SELECTIVE:
        got = idx.search_batch(q, k=10, where=where)[0]
        assert [list(r[r != None]) for r in got] == brute(idx, q, 10, idx.metadata.mask(where, N))  # noqa: E711
    where = BROAD[0]
    got = idx.search_batch(q, k=10, where=where)[0]
    want = brute(idx, q, 10, idx.metadata.mask(where, N))
    assert all(idx.metadata.columns["colour"][idx.row(i)] in ("red", "green") for i in got.ravel() if i)
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)]) >= 0.8


def test_similar_and_rerank_with_where():
    idx = filtered_index("flat", 60)
    where = {"colour": "blue"}
    mask = idx.metadata.mask(where, 60)
    hits = idx.similar("a5", k=5, where=where)
    assert "a5" not in [i for i, _ in hits] and all(mask[idx.row(i)] for i, _ in hits)
    exp = [i for i in brute(idx, np.asarray(idx.vectors[5:6]), 6, mask)[0] if i != "a5"][:5]
    assert [i for i, _ in hits] == exp
    photos = idx.article_photos("a0")
    full = idx.search(photos, k=5, rerank="chamfer", candidates=60, where=where)
    assert all(mask[idx.row(i)] for i, _ in full)
    unfiltered = idx.search(photos, k=60, rerank="chamfer", candidates=60)  # every row re-scored
    assert [i for i, _ in full] == [i for i, _ in unfiltered if mask[idx.row(i)]][:5]


@pytest.mark.parametrize("where, words", [
    ({"brand": "x"}, "unknown key 'brand'; this export's articles have colour, group, rare, size"),
    ({"group": "g42"}, "no article has group='g42'; group values: g0, g1"),
    ({"group": ["g1", "nope"]}, "no article has group='nope'"),
    ({"group": []}, "no article has group="),
])
def test_bad_filters_are_one_line_errors(where, words):
    idx = filtered_index("flat", 60)
    with pytest.raises(SetencError, match="where") as e:
        idx.search_batch(queries(idx, 2), k=3, where=where)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_parse_where():
    assert parse_where(["group=Shoes", "color=blue", "group=Sandals", "path=a=b"]) == {
        "group": ["Shoes", "Sandals"], "color": ["blue"], "path": ["a=b"]}
    with pytest.raises(SetencError, match="not KEY=VALUE"):
        parse_where(["Shoes"])


def test_export_stores_checksummed_metadata_through_edits(fake_backbone, tmp_path):
    enc = SetEncoder.parameter_free(fake_backbone)
    cat = colour_catalog(tmp_path, 12)
    lines = [json.loads(x) for x in cat.read_text().splitlines()]
    for i, line in enumerate(lines):
        line.update({"size": 40 + i % 2, "sale": i % 4 == 0, "tags": ["x"]} if i < 8 else {})
    first = tmp_path / "first.jsonl"
    first.write_text("".join(json.dumps(x) + "\n" for x in lines[:8]))
    m = export_index(enc, first, tmp_path / "cache", tmp_path / "idx", progress=False)
    assert m["metadata"] == {"keys": ["group", "sale", "size"]} and "metadata.json" in m["files"]  # lists: not kept
    cat.write_text("".join(json.dumps(x) + "\n" for x in lines))
    export_index(enc, cat, tmp_path / "cache", tmp_path / "idx", progress=False, append=True)
    lines[2]["group"] = "g4"
    (tmp_path / "upd.jsonl").write_text(json.dumps(lines[2]) + "\n")
    export_index(enc, tmp_path / "upd.jsonl", tmp_path / "cache", tmp_path / "idx", progress=False, update=True)
    delete_articles(tmp_path / "idx", ["a0"])
    idx = SetIndex.load(tmp_path / "idx", enc)
    want = {a["id"]: a for a in lines if a["id"] != "a0"}
    assert idx.ids == list(want)
    assert idx.metadata.columns["group"] == [want[i]["group"] for i in idx.ids]
    assert idx.metadata.columns["size"] == [json.dumps(want[i]["size"]) if "size" in want[i] else None for i in idx.ids]
    hits = idx.similar("a1", k=20, where={"group": "g4", "sale": True})
    assert [i for i, _ in hits] == ["a4"]  # a2 is g4 now but not on sale; a9 has no 'sale'
    (tmp_path / "idx" / "metadata.json").write_text('{"columns": {}}')
    with pytest.raises(CheckpointError, match="metadata.json: sha256 differs"):
        SetIndex.load(tmp_path / "idx")


def test_old_export_without_metadata_says_re_export(fake_backbone, tmp_path):
    enc = SetEncoder.parameter_free(fake_backbone)
    export_index(enc, colour_catalog(tmp_path, 6), tmp_path / "cache", tmp_path / "idx", progress=False)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    del manifest["files"]["metadata.json"]
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "idx" / "metadata.json").unlink()
    idx = SetIndex.load(tmp_path / "idx", enc)
    assert idx.similar("a1", k=2)
    with pytest.raises(SetencError, match="re-export"):
        idx.similar("a1", k=2, where={"group": "g1"})


def test_search_script_where(fake_backbone, tmp_path):
    enc = SetEncoder.parameter_free(fake_backbone)
    export_index(enc, colour_catalog(tmp_path, 15), tmp_path / "cache", tmp_path / "idx", progress=False)
    env = {**os.environ, "SETENC_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    run = lambda *a: subprocess.run([sys.executable, "scripts/search.py", str(tmp_path / "idx"), *a],  # noqa: E731
                                    cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    r = run("--id", "a1", "-k", "5", "--where", "group=g1", "--where", "group=g2")
    assert r.returncode == 0, r.stderr
    got = [line.split()[1] for line in r.stdout.splitlines()[1:]]
    assert len(got) == 5 and {int(i[1:]) % 5 for i in got} <= {1, 2} and "a1" not in got
    for args, words in ((["--where", "brand=x"], "unknown key 'brand'"), (["--where", "g1"], "not KEY=VALUE"),
                        (["--where", "group=g9"], "no article has group='g9'")):
        r = run("--id", "a1", *args)
        assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    q = tmp_path / "q.jsonl"
    q.write_text('{"id": "a1", "where": {"group": "g3"}}\n{"vector": %s}\n' % json.dumps([1.0] * 8))
    r = run("--queries", str(q), "-k", "3", "--where", "group=g2")
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(x)["hits"] for x in r.stdout.splitlines())
    assert {int(h["id"][1:]) % 5 for h in first} == {3} and {int(h["id"][1:]) % 5 for h in second} == {2}
