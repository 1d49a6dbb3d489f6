"""End to end on real photos: the real scripts, as a user runs them, on a small slice of ../shared/data/grocery.

Skipped with a reason where the real catalogues are absent (a user's machine); CI has them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, real_catalog

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One cache for the module, so the backbone export and photo vectors are made once."""
    cache = tmp_path_factory.mktemp("setenc-cache")
    return {**os.environ, "SETENC_CACHE": str(cache), "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def grocery_slice(tmp_path_factory) -> Path:
    """12 products of the real grocery catalogue, every capture session kept (query/gallery partition intact)."""
    from setenc.catalogs import load_catalog, write_catalog

    cat = load_catalog(real_catalog("grocery"))
    groups = sorted({a.group for a in cat})[::5][:12]
    part = cat.subset([a.id for a in cat if a.group in groups])
    return write_catalog(part, tmp_path_factory.mktemp("grocery-slice") / "catalog.jsonl")


def run(env, *args, ok=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_embed_twice_embeds_nothing_new(env, grocery_slice, tmp_path):
    first = run(env, "scripts/embed.py", "--catalog", str(grocery_slice), "--report", str(tmp_path / "r.json"))
    assert "0 cached" in first.stdout and " 0 skipped" in first.stdout
    second = run(env, "scripts/embed.py", "--catalog", str(grocery_slice))
    assert " 0 embedded" in second.stdout
    assert json.loads((tmp_path / "r.json").read_text())["embedded"] > 0


def test_train_evaluate_export_search(env, grocery_slice, tmp_path):
    run(env, "scripts/train.py", "--catalog", str(grocery_slice), "--out", str(tmp_path / "ck"), "--epochs", "2",
        "--run_name", "slice", "--progress", "false", "--split", "[0.5, 0.25, 0.25]")
    ckpt = tmp_path / "ck" / "slice" / "best.pt"
    result = json.loads((tmp_path / "ck" / "slice" / "result.json").read_text())
    assert "test/group" in result and 0 <= result["test/group"]["recall@1"] <= 1

    out = tmp_path / "eval"
    run(env, "scripts/evaluate.py", "--checkpoint", str(ckpt), "--catalog", str(grocery_slice), "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    methods = {r["method"] for r in report["rows"] if r["protocol"] == "group"}
    assert {"mean", "chamfer", "recursive", "linear", "proj"} <= methods
    assert "held out" in report["split"] and (out / "retrieval_grid.png").stat().st_size > 0

    idx = tmp_path / "index"
    run(env, "scripts/export.py", "--checkpoint", str(ckpt), "--catalog", str(grocery_slice), "--out", str(idx))
    lines = [json.loads(x) for x in grocery_slice.read_text().splitlines()]
    photos = [str(grocery_slice.parent / p) for p in lines[0]["images"]]
    found = run(env, "scripts/search.py", str(idx), *photos, "-k", "3", "--checkpoint", str(ckpt))
    assert lines[0]["id"] in found.stdout  # an indexed article finds itself


def test_bad_catalog_is_one_clear_line(env, tmp_path):
    bad = tmp_path / "catalog.jsonl"
    bad.write_text('{"id": "a1", "images": ["x.jpg"]}\n{"id": "a2", "images": \n')
    proc = run(env, "scripts/embed.py", "--catalog", str(bad), ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "catalog.jsonl:1" in proc.stderr and "x.jpg" in proc.stderr
