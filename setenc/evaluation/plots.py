"""Pictures of results: a grid of queries and their nearest articles, and a 2-D map of article vectors.

Drawn with matplotlib's Agg backend into files (never a window), so they work on servers and in CI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from setenc.errors import SetencError  # noqa: E402
from setenc.photos import load_image  # noqa: E402

Photo = str | os.PathLike | Image.Image
Hit = tuple[str, Sequence[Photo], float, bool | None]  # (article id, its photos, score, is_hit or None)
Row = tuple[str, Sequence[Photo], Sequence[Hit]]  # (title, query photos, hits best first)
FRAME = {True: "#1a9850", False: "#d73027", None: "#bbbbbb"}  # hit green, miss red, unknown grey
CELL = 1.7  # inches per photo


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, tight_bbox: bool = False) -> Path:
    """Lay out, write (creating the folder) and close a figure; `tight_bbox` never clips long tick labels."""
    if not tight_bbox:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight" if tight_bbox else None)
    plt.close(fig)
    return path


def _thumb(photo: Photo, size: int = 160) -> np.ndarray | None:
    """A small RGB array of the photo, or None when it cannot be read (drawn as a blank cell, never a crash)."""
    try:
        img = photo if isinstance(photo, Image.Image) else load_image(photo)
    except (SetencError, OSError):
        return None
    img = img.convert("RGB")
    img.thumbnail((size, size))
    return np.asarray(img)


def _show(ax, photo: Photo | None, colour: str, width: float) -> None:
    pixels = None if photo is None else _thumb(photo)
    if pixels is None:
        ax.text(0.5, 0.5, "no photo", ha="center", va="center", fontsize=7, color="#777777", transform=ax.transAxes)
    else:
        ax.imshow(pixels)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def retrieval_grid(queries: Sequence[Row], path: str | os.PathLike, max_photos: int = 4) -> Path:
    """One row per query: its photos, then the first photo of each retrieved article with id and score.

    Args:
        queries: rows of (title, query photos, [(article id, photos, score, is_hit or None), ...]); several
            methods side by side are several rows with the same query photos.
        path: the PNG to write.
        max_photos: query photos shown per row.

    Returns:
        `path`. Hits are framed green, misses red, unknown grey.
    """
    if not queries:
        raise SetencError("retrieval_grid needs at least one query row")
    k = max(len(hits) for _, _, hits in queries)
    n_q = min(max_photos, max(len(photos) for _, photos, _ in queries))
    cols = n_q + 1 + k  # query photos, a gap, the hits
    widths = [1.0] * n_q + [0.25] + [1.0] * k
    fig, axes = plt.subplots(len(queries), cols, figsize=(CELL * sum(widths), CELL * 1.25 * len(queries)),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for r, (title, photos, hits) in enumerate(queries):
        for c in range(cols):
            axes[r, c].axis("off")
        for c, photo in enumerate(list(photos)[:n_q]):
            axes[r, c].axis("on")
            _show(axes[r, c], photo, "#444444", 1.0)
        axes[r, 0].set_title(title, loc="left", fontsize=9, fontweight="bold")
        for rank, (aid, art_photos, score, is_hit) in enumerate(hits):
            ax = axes[r, n_q + 1 + rank]
            ax.axis("on")
            _show(ax, art_photos[0] if len(art_photos) else None, FRAME[is_hit], 1.0 if is_hit is None else 4.0)
            label = aid if len(aid) <= 20 else aid[:19] + "…"
            ax.set_title(f"#{rank + 1} {label}\n{score:.3f}", fontsize=7)
    return save_figure(fig, path, dpi=80)


def embedding_map(vectors: np.ndarray, labels: Sequence | None, path: str | os.PathLike, method: str = "tsne",
                  max_points: int = 3000, seed: int = 0) -> Path:
    """A 2-D map of article vectors coloured by label: do articles of one group land together?

    Args:
        vectors: (N, E) article vectors.
        labels: N labels (e.g. groups) or None; a legend is drawn for at most 20 distinct labels.
        path: the PNG to write.
        method: "tsne" (sklearn t-SNE, cosine metric) or "pca".
        max_points: a deterministic random subset of at most this many points is drawn.
        seed: for the subset and t-SNE.

    Returns:
        `path`.
    """
    x = np.asarray(vectors, np.float32)  # (N, E)
    if x.ndim != 2 or len(x) < 3:
        raise SetencError(f"embedding_map needs an (N, E) array with N >= 3, got shape {x.shape}")
    labels = np.asarray(["all"] * len(x) if labels is None else [str(v) for v in labels])
    if len(labels) != len(x):
        raise SetencError(f"{len(labels)} labels for {len(x)} vectors; give one label per vector")
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))
        x, labels = x[keep], labels[keep]
    xy = _project(x, method, seed)  # (N, 2)
    names, codes = np.unique(labels, return_inverse=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab20" if len(names) <= 20 else "hsv")
    for c, name in enumerate(names):
        sel = codes == c
        colour = cmap(c if len(names) <= 20 else c / len(names))
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=colour, label=name, alpha=0.8, linewidths=0)
    if 1 < len(names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    ax.set_title(f"{method}: {len(x)} articles, {len(names)} labels", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path, dpi=100)


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed,
                    n_jobs=1).fit_transform(x)
    raise SetencError(f"embedding_map method {method!r} is unknown; use 'tsne' or 'pca'")
