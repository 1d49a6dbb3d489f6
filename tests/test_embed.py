"""The embedding cache: incremental, content-keyed, resumable, refuses a second writer, skips bad photos loudly."""

from __future__ import annotations

import os

import numpy as np
import pytest
from filelock import FileLock

from setenc.catalogs import load_catalog
from setenc.photos import EmbeddingCache, article_embeddings, embed_catalog
from setenc.plumbing.errors import SetencError


def test_second_run_embeds_nothing(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    r1 = embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert (r1.photos, r1.embedded, r1.cached, len(r1.skipped)) == (12, 12, 0, 0)
    r2 = embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert (r2.embedded, r2.cached) == (0, 12)
    assert fake_backbone.calls == 12


def test_vectors_match_direct_encoding(tiny_catalog, fake_backbone, tmp_path):
    from setenc.photos import load_image

    cat = load_catalog(tiny_catalog)
    embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0, batch_size=5)
    cache = EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim)
    sets, kept, dropped = article_embeddings(cat, cache)
    assert [len(s) for s in sets] == [len(a.images) for a in cat] and not dropped
    direct = fake_backbone.encode_images([load_image(p) for p in cat[2].images]).numpy()
    np.testing.assert_allclose(sets[2], direct, atol=1e-6)


def test_float16_storage(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    embed_catalog(cat, fake_backbone, tmp_path / "c", progress=False, num_workers=0, dtype="float16")
    cache = EmbeddingCache(tmp_path / "c", fake_backbone.id, fake_backbone.dim)
    assert cache.dtype == np.float16
    sets, _, _ = article_embeddings(cat, cache)
    assert sets[0].dtype == np.float32 and np.allclose(np.linalg.norm(sets[0], axis=1), 1, atol=2e-3)


def test_identical_bytes_share_one_vector(tmp_path, fake_backbone):
    from conftest import write_photos

    (p,) = write_photos(tmp_path / "img", 1)
    twin = tmp_path / "img" / "twin.jpg"
    twin.write_bytes(p.read_bytes())
    r = embed_catalog([p, twin], fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert (r.unique, r.embedded) == (1, 1)


def test_new_photos_only_are_embedded(tmp_path, fake_backbone):
    from conftest import write_photos

    first = write_photos(tmp_path / "a", 4, seed=1)
    embed_catalog(first, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    more = write_photos(tmp_path / "b", 3, seed=2)
    r = embed_catalog(first + more, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert (r.cached, r.embedded) == (4, 3)


def test_bad_photos_are_skipped_counted_and_named(tmp_path, fake_backbone):
    from conftest import write_photos

    good = write_photos(tmp_path / "img", 2)
    corrupt = tmp_path / "img" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "img" / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "img" / "missing.jpg"
    r = embed_catalog(good + [corrupt, empty, missing], fake_backbone, tmp_path / "cache", progress=False,
                      num_workers=0)
    assert r.embedded == 2
    skipped = {os.path.basename(p) for p, _ in r.skipped}
    assert skipped == {"corrupt.jpg", "empty.jpg", "missing.jpg"}
    assert all(os.path.basename(p) in reason for p, reason in r.skipped)
    r.write(tmp_path / "report.json")
    assert "corrupt.jpg" in (tmp_path / "report.json").read_text()


def test_crash_after_vectors_before_index_is_harmless(tiny_catalog, fake_backbone, tmp_path):
    """Orphan rows in a shard (killed between fsync and commit) are never read; the rerun embeds them again."""
    cat = load_catalog(tiny_catalog)
    cache = EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim)
    w = cache.writer()
    w.file = open(cache._shard_path(w.shard), "ab")
    w.file.write(np.full((3, fake_backbone.dim), np.nan, np.float32).tobytes())  # vectors, no index rows
    w.close()
    r = embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert r.embedded == 12
    sets, _, _ = article_embeddings(cat, EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim))
    assert all(np.isfinite(s).all() for s in sets)


def test_second_writer_is_refused(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    cache = EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim)
    with FileLock(str(cache.dir / "write.lock")):
        with pytest.raises(SetencError, match="another embedding run"):
            embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)


def test_cache_refuses_other_backbone_dim(tmp_path):
    EmbeddingCache(tmp_path, "b:1", 8)
    with pytest.raises(SetencError, match="cache belongs to"):
        EmbeddingCache(tmp_path, "b:1", 16)


def test_nan_in_cache_is_a_clear_error(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    cache = EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim)
    shard = next((cache.dir / "shards").glob("*.bin"))
    data = np.fromfile(shard, np.float32)
    data[0] = np.nan
    data.tofile(shard)
    with pytest.raises(SetencError, match="NaN"):
        article_embeddings(cat, EmbeddingCache(tmp_path / "cache", fake_backbone.id, fake_backbone.dim))


def test_workers_decode_in_subprocesses(tiny_catalog, fake_backbone, tmp_path):
    cat = load_catalog(tiny_catalog)
    r = embed_catalog(cat, fake_backbone, tmp_path / "cache", progress=False, num_workers=2, batch_size=4)
    assert r.embedded == 12


def test_embed_script_fills_exactly_what_train_script_needs(tmp_path):
    """`embed.py --catalog X` asks the recipe (the one place that decides) for the backbone and photo variants that
    `train.py --catalog X` will use, so training then embeds nothing."""
    import re
    import subprocess
    import sys

    from conftest import REPO, paired_catalog, script_env

    pytest.importorskip("pytorch_lightning")
    catalog = paired_catalog(tmp_path / "cat", 8, 2, seed=5)
    env = script_env(tmp_path / "cache")

    def run(script: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--catalog", str(catalog),
                               "--runtime", "torch", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    embedded = run("embed.py")
    assert "[recipe] backbone=" in embedded and "[recipe] tta=" in embedded
    assert re.search(r"x 2 views \(vectors\): 0 cached, 32 embedded", embedded), embedded  # 16 photos + a variant
    trained = run("train.py", "--out", str(tmp_path / "runs"), "--fast_dev_run", "true", "--progress", "false")
    assert re.search(r"\[embed\] .*: 32 cached, 0 embedded", trained), trained
