"""`scripts/train.py` as a user runs it: a fast_dev_run smoke test, a run without a validation split, and (slow)
the embedded default with no arguments on a fresh cache, loaded back without Lightning in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, paired_catalog, script_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return script_env(tmp_path_factory.mktemp("setenc-cache"))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """24 articles of 2 tiny photos in 12 groups."""
    return paired_catalog(tmp_path_factory.mktemp("train-cat"), 24, 2, seed=5)


def train(env, *args, cwd=REPO) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_fast_dev_run_smoke(env, catalog, tmp_path):
    """One batch of training and validation through the real script; a smoke test writes no checkpoint."""
    train(env, "--catalog", catalog, "--out", tmp_path, "--run_name", "r", "--fast_dev_run", "true",
          "--progress", "false", "--split", "[0.5, 0.25, 0.25]")
    run_dir = tmp_path / "r"
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "best.pt").exists()


def test_no_validation_split_runs_every_epoch_and_keeps_the_last(env, catalog, tmp_path):
    out = train(env, "--catalog", catalog, "--out", tmp_path, "--run_name", "r", "--epochs", 3, "--batch_size", 8,
                "--progress", "false", "--split", "[0.7, 0.0, 0.3]")
    assert "no validation split: all 3 epochs run and the last one is kept" in out
    run_dir = tmp_path / "r"
    result = json.loads((run_dir / "result.json").read_text())
    assert "test/group" in result and not any(k.startswith("val/") for k in result)
    last = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 2  # epochs are counted from 0: all three ran
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    head = {k.removeprefix("head."): v for k, v in last["state_dict"].items() if k.startswith("head.")}
    assert head.keys() == best["state_dict"].keys()
    for k, v in head.items():
        torch.testing.assert_close(best["state_dict"][k], v, rtol=0, atol=0)


@pytest.mark.slow  # ~1 min on 2 cores: builds the demo catalog, exports the backbone, embeds 3,747 photos
def test_embedded_default_runs_with_no_arguments(tmp_path):
    env = script_env(tmp_path / "cache")
    train(env, cwd=tmp_path)
    ckpt = tmp_path / "checkpoints" / "demo-proj-s0" / "best.pt"
    code = ("import sys, numpy as np; from setenc import SetEncoder; "
            f"e = SetEncoder.from_pretrained({str(ckpt)!r}); v = e.encode_sets([np.eye(2, e.dim, dtype=np.float32)]); "
            "assert v.shape == (1, e.out_dim) and 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


@pytest.mark.parametrize("catalog_name", [None, "demo"])
def test_demo_catalog_does_not_depend_on_the_training_seed(monkeypatch, tmp_path, tiny_catalog, fake_backbone,
                                                          catalog_name):
    """Every training seed (and every matcher row) sees the same demo catalogue: the seed never reaches it."""
    pytest.importorskip("pytorch_lightning")
    from setenc.training import run
    from setenc.training.config import load_config

    calls = []
    monkeypatch.setattr("setenc.catalogs.make_demo_catalog", lambda *a, **kw: calls.append((a, kw)) or tiny_catalog)
    monkeypatch.setattr(run, "create_backbone", lambda *a, **kw: fake_backbone)
    keys = [run.load_training_data(load_config(None, {"catalog": catalog_name, "seed": seed, "progress": False,
                                                      "cache": str(tmp_path / "cache")}))[0]["catalog"]
            for seed in (0, 1)]
    assert calls == [((), {}), ((), {})] and keys[0] == keys[1]
