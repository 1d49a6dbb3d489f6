"""The Ray engine (issue 16): the same cache as the single-process engine, only missing photos are sent, a resumed
run embeds nothing; one local Ray of 2 CPUs, the real offline backbone on tiny generated photos (~40 s on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, script_env, write_photos
from setenc.plumbing.errors import SetencError

ray = pytest.importorskip("ray", reason='the Ray engine needs the [scale] extra: pip install -e ".[scale]"')
pytest.importorskip("ray.data", reason='the Ray engine needs Ray Data: pip install -e ".[scale]"')

from setenc.photos import EmbeddingCache, create_backbone, embed_catalog  # noqa: E402
from setenc.photos.ray_engine import BackboneFactory, RayEngine  # noqa: E402


def _contents(root, backbone) -> dict[str, np.ndarray]:
    """Every (hash -> vector) of one cache."""
    cache = EmbeddingCache(root, backbone.id, backbone.dim)
    keys = sorted(h for (h,) in cache.db.execute("SELECT hash FROM vectors"))
    return dict(zip(keys, cache.get(keys)))


def test_ray_engine_fills_the_same_cache_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SETENC_CACHE", str(tmp_path / "setenc"))  # nothing of this test lands in the user's cache
    photos = write_photos(tmp_path / "img", 10, size=48)
    bad = tmp_path / "img" / "bad.jpg"
    bad.write_bytes(b"not a photo")
    backbone = create_backbone("efficientnet-lite0", runtime="torch")  # torch: no ONNX export to wait for
    single = embed_catalog(photos + [bad], backbone, tmp_path / "single", num_workers=0, progress=False)

    # a run that stopped after 3 photos: the Ray engine must send only the other 7
    embed_catalog(photos[:3], backbone, tmp_path / "ray", num_workers=0, progress=False)
    engine = RayEngine(BackboneFactory("efficientnet-lite0", "torch"), workers=1, num_cpus=2)
    with engine:  # one Ray for both runs
        r = embed_catalog(photos + [bad], backbone, tmp_path / "ray", batch_size=4, progress=False, engine=engine)
        # a node whose backbone is another one must not write: a one-line error, not a Ray traceback
        other = RayEngine(BackboneFactory("efficientnet-lite2", "torch"), workers=1)
        with pytest.raises(SetencError, match="worker built backbone efficientnet-lite2.*same setenc and weights"):
            embed_catalog(photos, backbone, tmp_path / "other", progress=False, engine=other)
    assert not ray.is_initialized()  # the engine shuts down the Ray it started
    assert (r.cached, r.embedded) == (3, 7)
    assert [p for p, _ in r.skipped] == [str(bad)] and r.skipped == single.skipped
    assert len(EmbeddingCache(tmp_path / "other", backbone.id, backbone.dim)) == 0

    a, b = _contents(tmp_path / "single", backbone), _contents(tmp_path / "ray", backbone)
    assert sorted(a) == sorted(b) and len(a) == 10
    np.testing.assert_allclose(np.stack([b[h] for h in a]), np.stack(list(a.values())), atol=1e-5)

    again = embed_catalog(photos + [bad], backbone, tmp_path / "ray", progress=False, engine=engine)
    assert (again.cached, again.embedded) == (10, 0) and not ray.is_initialized()  # nothing sent, Ray not started


def _fake_ray(**resources) -> SimpleNamespace:
    return SimpleNamespace(cluster_resources=lambda: resources)


def test_actor_pool_follows_the_cluster():
    engine = RayEngine(BackboneFactory("efficientnet-lite0"))
    workers, res, device = engine._pool(_fake_ray(CPU=8))
    assert (workers, res["num_cpus"], device) == (4, 1, "cpu")  # half the CPUs, the rest decode
    workers, res, device = engine._pool(_fake_ray(CPU=16, GPU=2))
    assert (workers, res["num_gpus"], device) == (2, 1, "cuda")  # one actor per GPU
    workers, res, device = engine._pool(_fake_ray(CPU=16, GPU=2), cpu_only=True)
    assert (workers, "num_gpus" in res, device) == (8, False, "cpu")  # an int8 graph: CPU actors beside the GPUs
    with pytest.raises(SetencError, match="int8 backbone runs on CPUs only"):
        RayEngine(BackboneFactory("efficientnet-lite0-int8"), gpus=True)._pool(_fake_ray(CPU=4, GPU=1), cpu_only=True)
    with pytest.raises(SetencError, match="leave none of the cluster's 2 CPUs"):
        RayEngine(BackboneFactory("efficientnet-lite0"), workers=2)._pool(_fake_ray(CPU=2))
    with pytest.raises(SetencError, match="no GPU"):
        RayEngine(BackboneFactory("efficientnet-lite0"), gpus=True)._pool(_fake_ray(CPU=2))
    with pytest.raises(SetencError, match="--ray-cpus sizes a local Ray"):
        RayEngine(BackboneFactory("efficientnet-lite0"), address="auto", num_cpus=4)


def test_ray_options_without_the_ray_engine_are_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "embed.py"), "--ray-workers", "2"],
                         capture_output=True, text=True, env=script_env(tmp_path), timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0 and "--engine ray" in out.stderr


def test_with_engine_keeps_one_ray_for_every_pass(monkeypatch):
    """A TTA embeds one pass per variant: inside `with engine:` Ray starts once and stops at the end."""
    import setenc.photos.ray_engine as ray_engine

    calls = []
    fake = SimpleNamespace(up=False)
    fake.is_initialized = lambda: fake.up
    fake.init = lambda **kw: (calls.append("init"), setattr(fake, "up", True))
    fake.shutdown = lambda: (calls.append("shutdown"), setattr(fake, "up", False))
    monkeypatch.setattr(ray_engine, "_ray", lambda: fake)
    monkeypatch.setattr(RayEngine, "_embed", lambda self, *a: calls.append("embed"))
    engine = RayEngine(BackboneFactory("efficientnet-lite0"), num_cpus=2)
    with engine:
        engine([], None, None, 4, False, None)
        engine([], None, None, 4, False, None)
    assert calls == ["init", "embed", "embed", "shutdown"]
    engine([], None, None, 4, False, None)  # outside `with`: its own start and stop
    assert calls[4:] == ["init", "embed", "shutdown"]
