"""Shared test fixtures: tiny photos, tiny catalogs, a fake backbone; everything on CPU and offline."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(1)
# every test's own cache shares one folder of built backbone graphs: each ONNX export / int8 build happens once a run
os.environ.setdefault("SETENC_GRAPHS", tempfile.mkdtemp(prefix="setenc-graphs-"))


def real_catalog(name: str) -> Path:
    """Path of a real catalogue in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name / "catalog.jsonl"
    if not path.is_file():
        pytest.skip(f"real catalogue {name!r} not found at {path.parent} (it ships with CI, not with the package)")
    return path


def write_photos(folder: Path, n: int, seed: int = 0, size: int = 24) -> list[Path]:
    """n small random-colour JPEGs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        p = folder / f"p{seed}_{i}.jpg"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def script_env(cache: Path) -> dict:
    """Environment for running a script in a subprocess: its own cache, wandb offline, one thread."""
    return {**os.environ, "SETENC_CACHE": str(cache), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}


def paired_catalog(root: Path, articles: int, photos: int, seed: int) -> Path:
    """A manifest of `articles` articles of `photos` tiny random photos each, two articles per group."""
    paths = write_photos(root / "img", articles * photos, seed=seed, size=20)
    lines = [{"id": f"a{i}", "images": [str(p.relative_to(root)) for p in paths[photos * i : photos * (i + 1)]],
              "group": f"g{i // 2}"} for i in range(articles)]
    (root / "catalog.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root / "catalog.jsonl"


@pytest.fixture
def tiny_catalog(tmp_path) -> Path:
    """A manifest of 6 articles in 3 groups with 1–3 photos each."""
    photos = write_photos(tmp_path / "img", 12)
    lines, k = [], 0
    for a in range(6):
        n = 1 + a % 3
        lines.append({"id": f"a{a}", "images": [str(p.relative_to(tmp_path)) for p in photos[k : k + n]],
                      "group": f"g{a // 2}"})
        k += n
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


class FakeBackbone:
    """A deterministic stand-in with the Backbone interface: mean colour -> fixed random projection."""

    name = "fake"
    id = "fake:v1"
    dim = 8

    def __init__(self):
        from setenc.photos import ImageTransform

        self.transform = ImageTransform(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.proj = torch.randn(3, self.dim, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += len(batch)
        v = batch.mean(dim=(2, 3)) @ self.proj + 1e-3
        return torch.nn.functional.normalize(v, dim=-1)

    def encode_images(self, images):
        return self.encode(torch.stack([self.transform(im) for im in images]))


@pytest.fixture
def fake_backbone() -> FakeBackbone:
    return FakeBackbone()
