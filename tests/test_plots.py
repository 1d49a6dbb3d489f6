"""Result pictures: each writes a PNG that PIL opens, hits and misses are framed in their colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from setenc.errors import SetencError
from setenc.evaluation.plots import _project, embedding_map, retrieval_grid

from conftest import write_photos


def has_colour(png, rgb: tuple[int, int, int], tol: int = 12) -> bool:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return bool((np.abs(pixels - np.array(rgb)).max(-1) <= tol).any())


def test_retrieval_grid(tmp_path):
    photos = write_photos(tmp_path / "img", 6)
    hits = [("a1", photos[1:3], 0.91, True), ("a-very-long-article-identifier-2", photos[3:4], 0.52, None)]
    rows = [("mean", photos[:3], hits), ("recursive", photos[:3], [("a4", [photos[4]], 0.4, False),
                                                                  ("a5", [tmp_path / "gone.jpg"], 0.3, None)])]
    png = retrieval_grid(rows, tmp_path / "out" / "grid.png", max_photos=2)
    img = Image.open(png)
    assert png.stat().st_size > 0 and img.size[0] > img.size[1] > 100
    assert has_colour(png, (0x1A, 0x98, 0x50)) and has_colour(png, (0xD7, 0x30, 0x27))


def test_retrieval_grid_without_hits_has_no_frame_colours(tmp_path):
    photos = write_photos(tmp_path / "img", 2)
    png = retrieval_grid([("q", photos, [("a0", photos, 0.5, None)])], tmp_path / "plain.png")
    assert not has_colour(png, (0x1A, 0x98, 0x50)) and not has_colour(png, (0xD7, 0x30, 0x27))


def clusters(n: int = 30, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 3
    labels = [f"g{i % 3}" for i in range(n)]
    return (centres[np.arange(n) % 3] + rng.normal(size=(n, 16))).astype(np.float32), labels


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_embedding_map(tmp_path, method):
    x, labels = clusters()
    png = embedding_map(x, labels, tmp_path / f"{method}.png", method=method, max_points=25)
    assert png.stat().st_size > 0 and Image.open(png).size[0] > 100


def test_tsne_is_deterministic_and_separates_clusters():
    x, labels = clusters()
    a, b = _project(x, "tsne", seed=3), _project(x, "tsne", seed=3)
    np.testing.assert_array_equal(a, b)
    groups = np.array([int(s[1]) for s in labels])
    centres = np.stack([a[groups == g].mean(0) for g in range(3)])
    nearest = np.argmin(((a[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == groups).mean() > 0.9


def test_embedding_map_rejects_bad_input(tmp_path):
    x, labels = clusters()
    with pytest.raises(SetencError, match="one label per vector"):
        embedding_map(x, labels[:-1], tmp_path / "x.png")
    with pytest.raises(SetencError, match="unknown"):
        embedding_map(x, labels, tmp_path / "x.png", method="umap")
