"""Result pictures: each writes a PNG that PIL opens, hits and misses are framed in their colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from setenc.plumbing.errors import SetencError
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


def test_embedding_map_colours_the_largest_groups_and_says_whose_vectors(tmp_path, monkeypatch):
    import matplotlib.axes

    calls, titles = [], []
    real_scatter, real_title = matplotlib.axes.Axes.scatter, matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter",
                        lambda self, *a, **k: calls.append(k) or real_scatter(self, *a, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, *a, **k: titles.append(t) or real_title(self, t, *a, **k))
    rng = np.random.default_rng(0)
    labels = [f"g{i % 40}" for i in range(200)] + ["big"] * 20
    embedding_map(rng.normal(size=(220, 8)), labels, tmp_path / "m.png", method="pca", title="proj head vectors")
    coloured = [k for k in calls if k.get("s", 0) >= 40]
    assert len(coloured) == 12 and len({k["color"] for k in coloured}) == 12  # distinct, large markers
    assert coloured[0]["label"].startswith("big (20)")  # the largest group first
    assert len(calls) == 13 and calls[0]["color"] == "#cccccc"  # everything else: one grey layer
    assert titles and titles[-1].startswith("proj head vectors\nPCA of 220 articles")


def test_retrieval_grid_shows_captions_and_a_legend_only_when_hits_are_known(tmp_path, monkeypatch):
    import matplotlib.figure

    legends = []
    real = matplotlib.figure.Figure.legend
    monkeypatch.setattr(matplotlib.figure.Figure, "legend",
                        lambda self, *a, **k: legends.append(k) or real(self, *a, **k))
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "p.jpg")
    photo = tmp_path / "p.jpg"
    retrieval_grid([("q", [photo], [("a", [photo] * 3, 0.9, None, "Chelsea boot")])], tmp_path / "search.png")
    assert legends == []
    retrieval_grid([("q", [photo], [("a", [photo], 0.9, True), ("b", [photo], 0.5, False)])], tmp_path / "eval.png")
    assert len(legends) == 1 and [h.get_label() for h in legends[0]["handles"]][0].startswith("hit")
