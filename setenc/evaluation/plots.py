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

from setenc.plumbing.errors import SetencError  # noqa: E402
from setenc.photos import load_image  # noqa: E402

Photo = str | os.PathLike | Image.Image
Hit = tuple  # (article id, its photos, score, is_hit or None[, caption such as the title])
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


def _mosaic(photos: Sequence[Photo], size: int = 160) -> np.ndarray | None:
    """Up to 4 photos of one article tiled 2 x 2 on white (one photo: itself), so a hit shows the whole set."""
    thumbs = [t for t in (_thumb(p, size // 2 if len(photos) > 1 else size) for p in list(photos)[:4]) if t is not None]
    if len(thumbs) <= 1:
        return thumbs[0] if thumbs else None
    half = size // 2
    canvas = np.full((size, size, 3), 255, np.uint8)
    for k, t in enumerate(thumbs):
        y, x = (k // 2) * half, (k % 2) * half
        canvas[y : y + t.shape[0], x : x + t.shape[1]] = t
    return canvas


def _show(ax, photo: Photo | Sequence[Photo] | None, colour: str, width: float) -> None:
    many = isinstance(photo, (list, tuple))
    pixels = None if photo is None or (many and not photo) else _mosaic(photo) if many else _thumb(photo)
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
    """One row per query: its photos, then each retrieved article (up to 4 of its photos) with id, score, caption.

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
        for rank, (aid, art_photos, score, is_hit, *caption) in enumerate(hits):
            ax = axes[r, n_q + 1 + rank]
            ax.axis("on")
            _show(ax, list(art_photos), FRAME[is_hit], 1.0 if is_hit is None else 4.0)
            text = f"#{rank + 1} {aid}" + (f"\n{caption[0]}" if caption and caption[0] else "")
            ax.set_title(f"{_short(text, 24)}\n{score:.3f}", fontsize=7)
    from matplotlib.patches import Patch

    legend = [Patch(facecolor="white", edgecolor=FRAME[True], linewidth=3, label="hit: same group as the query"),
              Patch(facecolor="white", edgecolor=FRAME[False], linewidth=3, label="miss: another group"),
              Patch(facecolor="white", edgecolor="#444444", label="query photos (left of the gap)")]
    fig.tight_layout()
    if any(h[3] is not None for _, _, hits in queries for h in hits):  # hits known: say what the frames mean
        fig.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=9, frameon=False)
    return save_figure(fig, path, dpi=80, tight_bbox=True)


def _short(text: str, width: int) -> str:
    """At most two lines of `width` characters, cut with an ellipsis."""
    lines = [line if len(line) <= width else line[: width - 1] + "…" for line in text.splitlines()]
    return "\n".join(lines[:2])


def embedding_map(vectors: np.ndarray, labels: Sequence | None, path: str | os.PathLike, method: str = "tsne",
                  max_points: int = 3000, seed: int = 0, title: str | None = None, coloured: int = 12) -> Path:
    """A 2-D map of article vectors coloured by label: do articles of one group land together?

    Args:
        vectors: (N, E) article vectors.
        labels: N labels (e.g. groups) or None; the `coloured` largest label groups get distinct colours and a
            legend, every other point is drawn small and grey (dozens of similar colours tell nothing apart).
        path: the PNG to write.
        method: "tsne" (sklearn t-SNE, cosine metric) or "pca".
        max_points: a deterministic random subset of at most this many points is drawn.
        seed: for the subset and t-SNE.
        title: what the vectors are (whose head); the method and counts are appended.
        coloured: how many label groups get their own colour.

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
    names, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    top = [c for c in np.argsort(-counts, kind="stable")[:coloured] if counts[c] > 1 or len(names) <= coloured]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    rest = ~np.isin(codes, top)
    if rest.any():
        ax.scatter(xy[rest, 0], xy[rest, 1], s=14, color="#cccccc", linewidths=0,
                   label=f"other labels ({len(names) - len(top)})" if len(top) < len(names) else None)
    palette = plt.get_cmap("tab10" if len(top) <= 10 else "tab20")
    markers = "osD^v<>P*X"
    for k, c in enumerate(top):
        sel = codes == c
        ax.scatter(xy[sel, 0], xy[sel, 1], s=46, color=palette(k), marker=markers[k % len(markers)],
                   label=f"{names[c]} ({counts[c]})", alpha=0.9, edgecolors="white", linewidths=0.5)
    if len(names) > 1:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}{method.upper()} of {len(x)} articles; {len(top)} largest of {len(names)} labels in colour",
                 fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return save_figure(fig, path, dpi=100, tight_bbox=True)


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
