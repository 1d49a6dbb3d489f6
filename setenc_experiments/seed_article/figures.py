"""The article's figures that `setenc.evaluation.plots` lacks: the matching comparison, the per-view table, a distance matrix
and a bar chart of methods. Agg backend, written to PNG files, small enough to live in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from setenc.plumbing.errors import SetencError  # noqa: E402
from setenc.evaluation.plots import FRAME, _show, save_figure  # noqa: E402

Pick = tuple[int, int, float]  # (row, column, similarity)
ViewRow = tuple[str, Sequence, Sequence[float] | None, bool | None]  # (label, photo per view, sims, same label?)


def _save(fig, path: str | os.PathLike, dpi: int = 90) -> Path:
    return save_figure(fig, path, dpi, tight_bbox=True)


def matching_comparison(S: np.ndarray, picks: dict[str, Sequence[Pick]], path: str | os.PathLike) -> Path:
    """The same similarity matrix once per matcher, its matched cells framed, with the mean and worst match.

    Args:
        S: (n, m) photo × photo similarities.
        picks: matcher name -> its matches.
        path: the PNG to write.
    """
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or not picks:
        raise SetencError(f"matching_comparison needs an (n, m) matrix and at least one matcher, got {S.shape}")
    n, m = S.shape
    fig, axes = plt.subplots(1, len(picks), figsize=(0.9 * m * len(picks) + 1, 0.9 * n + 1.3), squeeze=False)
    for ax, (name, chosen) in zip(axes[0], picks.items()):
        lo, hi = S.min() - 0.05, S.max()
        ax.imshow(S, cmap="Blues", vmin=lo, vmax=hi)
        for i in range(n):
            for j in range(m):
                dark = S[i, j] > lo + 0.6 * (hi - lo)
                ax.text(j, i, f"{S[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        for k, (i, j, _) in enumerate(chosen):  # k: the order of the matches, best first
            ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="#d73027", linewidth=2.5))
            ax.text(j - 0.38, i - 0.3, str(k + 1), fontsize=7, color="#d73027", fontweight="bold")
        sims = [v for _, _, v in chosen]
        ax.set_title(f"{name}: mean {np.mean(sims):.3f}, worst {min(sims):.3f}\ntotal {sum(sims):.3f}",
                     fontsize=9)
        ax.set_xticks(range(m), [f"B{j + 1}" for j in range(m)], fontsize=8)
        ax.set_yticks(range(n), [f"A{i + 1}" for i in range(n)], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def view_table(views: Sequence[str], rows: Sequence[ViewRow], path: str | os.PathLike) -> Path:
    """The article's ordered table: a target and its candidates, one column per view, each photo's similarity
    to the target's photo of the same view, and their average in the last column.

    Args:
        views: the view tags, one column each.
        rows: the target first (sims None), then candidates: (label, photo per view, similarity per view, is_hit).
        path: the PNG to write.
    """
    if not rows:
        raise SetencError("view_table needs a target row")
    cols = len(views) + 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.6 * cols, 1.8 * len(rows)), squeeze=False)
    for r, (label, photos, sims, hit) in enumerate(rows):
        for c, view in enumerate(views):
            ax = axes[r, c]
            _show(ax, photos[c] if c < len(photos) else None, FRAME[hit] if sims is not None else "#444444",
                  1.0 if sims is None else 3.0)
            head = view if r == 0 else f"{view}: {sims[c]:.3f}"
            ax.set_title(head, fontsize=8)
        ax = axes[r, -1]
        ax.axis("off")
        text = "target" if sims is None else f"average\n{np.mean(sims):.3f}"
        ax.text(0.05, 0.5, f"{text}\n\n{label}", fontsize=8, va="center", ha="left", wrap=True, transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, path, dpi=80)


def distance_matrix(D: np.ndarray, labels: Sequence[str], path: str | os.PathLike, max_cells: int = 100) -> Path:
    """A distance matrix with rows / columns sorted by label, block-averaged to at most `max_cells` cells a side
    (keeps the PNG small), label boundaries drawn.
    """
    D = np.asarray(D, dtype=float)
    labels = np.asarray([str(x) for x in labels])
    if D.ndim != 2 or D.shape[0] != D.shape[1] or len(labels) != len(D):
        raise SetencError(f"distance_matrix needs a square (N, N) matrix and N labels, got {D.shape}, {len(labels)}")
    order = np.argsort(labels, kind="stable")
    D, labels = D[np.ix_(order, order)], labels[order]
    step = int(np.ceil(len(D) / max_cells))
    k = int(np.ceil(len(D) / step))
    edges = np.minimum(np.arange(k + 1) * step, len(D))
    small = np.array([[D[edges[a]:edges[a + 1], edges[b]:edges[b + 1]].mean() for b in range(k)] for a in range(k)])
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    im = ax.imshow(small, cmap="viridis", extent=(0, len(D), len(D), 0))
    names, starts = np.unique(labels, return_index=True)
    bounds = sorted(starts) + [len(D)]
    for b in bounds[1:-1]:
        ax.axhline(b, color="white", linewidth=1)
        ax.axvline(b, color="white", linewidth=1)
    centres = [(a + b) / 2 for a, b in zip(bounds[:-1], bounds[1:])]
    ordered_names = [labels[s] for s in sorted(starts)]
    ax.set_xticks(centres, ordered_names, fontsize=8, rotation=20)
    ax.set_yticks(centres, ordered_names, fontsize=8)
    ax.set_title(f"cosine distance, {len(D)} × {len(D)} (block means of {step}×{step})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path, dpi=80)


def method_bars(results: dict[str, dict[str, float]], metric_names: Sequence[str], path: str | os.PathLike,
                title: str = "") -> Path:
    """Grouped bars: one group per method, one bar per metric; values written on the bars.

    Args:
        results: method -> {metric: value}.
        metric_names: which metrics, in order.
    """
    if not results:
        raise SetencError("method_bars needs at least one method")
    methods = list(results)
    width = 0.8 / len(metric_names)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(methods) + 1.5), 3.4))
    for k, metric in enumerate(metric_names):
        values = [results[m].get(metric, np.nan) for m in methods]
        x = np.arange(len(methods)) + (k - (len(metric_names) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=metric)
        for bar, v in zip(bars, values):
            if np.isfinite(v):
                ax.text(bar.get_x() + bar.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6.5)
    ax.set_xticks(np.arange(len(methods)), methods, fontsize=8, rotation=15)
    ax.set_ylim(0, 1.2)
    ax.legend(fontsize=8, loc="upper right", ncol=len(metric_names), frameon=False)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
