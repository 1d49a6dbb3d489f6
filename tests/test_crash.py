"""Kill -9 midway, then rerun: nothing lost, nothing half-written read back, the same result as an uninterrupted run.
Plus: a second writer on a busy cache is refused, and training is deterministic for a seed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, paired_catalog, script_env, write_photos

N_PHOTOS = 60


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return script_env(tmp_path_factory.mktemp("setenc-cache"))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """20 articles of 3 tiny photos in 10 groups."""
    return paired_catalog(tmp_path_factory.mktemp("crash-cat"), N_PHOTOS // 3, 3, seed=3)


def start(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, ok: bool = True) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    if ok:
        assert proc.returncode == 0, out[-3000:] + err[-3000:]
    return out, err


def wait_for(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    t = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()}"
        assert time.monotonic() - t < timeout, "no progress"
        time.sleep(0.02)


def cached_rows(cache_root: Path) -> int:
    dbs = list(cache_root.glob("*/index.sqlite"))
    if not dbs:
        return 0
    try:
        with sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_embed_killed_midway_resumes_and_a_second_writer_is_refused(env, catalog, tmp_path, monkeypatch):
    cache_root = tmp_path / "cache"
    args = ("scripts/embed.py", "--catalog", catalog, "--out", cache_root, "--batch-size", "2", "--workers", "0",
            "--tta", "none")  # one vector a photo: the counts below are photos
    first = start(env, *args)
    wait_for(lambda: cached_rows(cache_root) >= 2, first)
    first.send_signal(signal.SIGSTOP)  # frozen mid-run, holding the writer lock, however fast this machine is
    second = start(env, *args)  # same cache while the first writes
    out, err = finish(second, ok=False)
    assert second.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "another embedding run is writing this cache" in err
    first.send_signal(signal.SIGKILL)
    first.wait()
    done = cached_rows(cache_root)
    assert 0 < done < N_PHOTOS, done

    out, _ = finish(start(env, *args, "--report", tmp_path / "r.json"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cached"] == done and report["embedded"] == N_PHOTOS - done and not report["skipped"], report

    # same vectors as an uninterrupted run: compare with the backbone on the decoded photos directly
    monkeypatch.setenv("SETENC_CACHE", env["SETENC_CACHE"])  # the ONNX export the scripts made
    from setenc.photos import create_backbone
    from setenc.training.recipe import BACKBONE
    from setenc.catalogs import load_catalog
    from setenc.photos import EmbeddingCache
    from setenc.photos import load_image

    backbone = create_backbone(BACKBONE)  # the recipe's, which the script embedded with
    cache = EmbeddingCache(cache_root, backbone.id, backbone.dim)
    paths = load_catalog(catalog).image_paths
    got = cache.get(cache.hashes(paths))
    want = backbone.encode_images([load_image(p) for p in paths]).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


TRAIN = ("--head", "deepsets", "--split", "[0.6, 0.2, 0.2]", "--batch_size", "8", "--progress", "false",
         "--patience", "1000", "--seed", "1")


def train_args(catalog: Path, out: Path, epochs: int) -> tuple:
    return ("scripts/train.py", "--catalog", catalog, "--out", out, "--run_name", "r", "--epochs", epochs, *TRAIN)


def last_epoch(ckpt: Path) -> int:
    try:
        return torch.load(ckpt, map_location="cpu", weights_only=True)["epoch"]
    except Exception:  # noqa: BLE001 -- not there yet (Lightning swaps it in atomically)
        return -1


EPOCHS = 12


@pytest.fixture(scope="module")
def reference_run(env, catalog, tmp_path_factory) -> Path:
    """An uninterrupted training run, on a warm cache (backbone exported, photos embedded)."""
    out = tmp_path_factory.mktemp("ref")
    finish(start(env, "scripts/embed.py", "--catalog", catalog))
    finish(start(env, *train_args(catalog, out, EPOCHS)))
    return out / "r"


@pytest.mark.slow  # ~2 min: three training runs
def test_train_killed_midway_resumes_to_the_same_result(env, catalog, reference_run, tmp_path):
    proc = start(env, *train_args(catalog, tmp_path, EPOCHS))
    wait_for(lambda: last_epoch(tmp_path / "r.unfinished" / "last.ckpt") >= 2, proc)  # a run writes there until done
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= last_epoch(tmp_path / "r.unfinished" / "last.ckpt") < EPOCHS - 1
    finish(start(env, *train_args(catalog, tmp_path, EPOCHS), "--resume"))
    got = json.loads((tmp_path / "r" / "result.json").read_text())
    want = json.loads((reference_run / "result.json").read_text())
    for key in want:
        if "/" in key:
            for metric, value in want[key].items():
                assert got[key][metric] == pytest.approx(value, abs=1e-3), (key, metric)


@pytest.mark.slow
def test_truncated_last_checkpoint_is_refused_on_resume(env, catalog, tmp_path):
    """Lightning writes last.ckpt atomically (fsspec transaction: temp file + rename), so a kill never leaves a
    torn one; a file damaged some other way is refused with one line naming it."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    torch.save({"epoch": 3, "state_dict": {"head.w": torch.zeros(64, 64)}}, run_dir / "whole.ckpt")
    (run_dir / "last.ckpt").write_bytes((run_dir / "whole.ckpt").read_bytes()[:3000])
    out, err = finish(start(env, *train_args(catalog, tmp_path, EPOCHS), "--resume"), ok=False)
    assert "Traceback" not in err, err[-3000:]
    assert "last.ckpt" in err and "error: " in err, err[-3000:]


def test_embedding_leaves_the_global_rng_alone(tmp_path, fake_backbone):
    """Else a seeded train run on a cold cache initialises its head differently from one on a warm cache."""
    from setenc.photos import embed_catalog

    photos = write_photos(tmp_path / "img", 3)
    torch.manual_seed(0)
    want = torch.rand(4)
    torch.manual_seed(0)
    embed_catalog(photos, fake_backbone, tmp_path / "cache", progress=False, num_workers=0)
    assert torch.equal(torch.rand(4), want)


@pytest.mark.slow
def test_same_seed_same_checkpoint_metrics_and_exported_vectors(env, catalog, reference_run, tmp_path):
    finish(start(env, *train_args(catalog, tmp_path, EPOCHS)))
    assert _metrics(tmp_path / "r") == _metrics(reference_run)
    vecs = []
    for ckpt, out in [(reference_run / "best.pt", tmp_path / "xa"), (tmp_path / "r" / "best.pt", tmp_path / "xb")]:
        finish(start(env, "scripts/export.py", "--checkpoint", ckpt, "--catalog", catalog, "--out", out))
        vecs.append(np.load(out / "vectors.npy"))
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-5)


def _metrics(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "result.json").read_text()).items() if "/" in k}


@pytest.mark.slow
def test_a_cold_cache_trains_the_same_head(env, catalog, reference_run, tmp_path):
    cold = {**env, "SETENC_CACHE": str(tmp_path / "cold-cache")}
    finish(start(cold, *train_args(catalog, tmp_path, EPOCHS)))
    assert _metrics(tmp_path / "r") == _metrics(reference_run)
