"""Why two articles match: the photo pairs that drive their score, each with its cosine, and a picture of them.

A reviewer deciding "same product?" wants to see which photos agree. Two readings of the photo x photo cosine matrix:
- `linear` (default): the one-to-one assignment maximising the total cosine (the `linear` matcher's Hungarian
  assignment): every photo of the smaller set paired once;
- `chamfer`: every photo with its best counterpart on the other side (the `chamfer` matcher's row and column maxima),
  so one strong photo may pair with several.
Photo rows are photos; under an `elements` TTA (several vectors a photo) `per_photo` maps rows back to photos.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from setenc.matching.matchers import create_matcher
from setenc.plumbing.errors import SetencError

HOW = ("linear", "chamfer")


@dataclass
class PhotoPair:
    """Photo `a` of the first article matched to photo `b` of the second, at cosine `cosine`."""

    a: int
    b: int
    cosine: float

    def as_dict(self) -> dict:
        return asdict(self)


def photo_pairs(a: np.ndarray, b: np.ndarray, how: str = "linear", per_photo: int = 1) -> list[PhotoPair]:
    """The photo pairs of two articles' unit photo vectors `a (n, D)` and `b (m, D)`, best first."""
    if how not in HOW:
        raise SetencError(f"explain how={how!r}: use one of {', '.join(HOW)}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or not len(a) or not len(b) or a.shape[1] != b.shape[1]:
        raise SetencError(f"explain needs two non-empty (n, D) photo-vector arrays of one width, got "
                          f"{a.shape} and {b.shape}")
    S = np.clip(a @ b.T, -1.0, 1.0)  # (n, m) cosines
    if how == "linear":
        rows, cols, sims = create_matcher("linear").pairs(S)
        found = list(zip(rows.tolist(), cols.tolist(), sims.tolist()))
    else:
        best_cols = {(i, int(S[i].argmax())) for i in range(len(S))}
        best_rows = {(int(S[:, j].argmax()), j) for j in range(S.shape[1])}
        found = [(i, j, float(S[i, j])) for i, j in best_cols | best_rows]
    best: dict[tuple[int, int], float] = {}
    for i, j, v in found:  # rows of one photo (elements TTA) collapse to that photo's best
        key = (i // per_photo, j // per_photo)
        best[key] = max(v, best.get(key, -np.inf))
    pairs = [PhotoPair(i, j, round(float(v), 6)) for (i, j), v in best.items()]
    return sorted(pairs, key=lambda p: (-p.cosine, p.a, p.b))


def pairs_png(pairs: Sequence[PhotoPair], a_photos: Sequence, b_photos: Sequence, path: str | os.PathLike,
              title: str = "", max_pairs: int = 8) -> Path:
    """The matched photos side by side, one pair a row with its cosine (photo paths or PIL images; a photo that
    cannot be read is a blank cell)."""
    from setenc.evaluation.plots import CELL, _show, plt, save_figure

    shown = list(pairs)[:max_pairs]
    if not shown:
        raise SetencError("no photo pairs to draw")
    fig, axes = plt.subplots(len(shown), 2, figsize=(2 * CELL, CELL * len(shown) + 0.4), squeeze=False)
    for row, p in zip(axes, shown):
        _show(row[0], a_photos[p.a] if p.a < len(a_photos) else None, "#bbbbbb", 1)
        _show(row[1], b_photos[p.b] if p.b < len(b_photos) else None, "#bbbbbb", 1)
        row[0].set_ylabel(f"photo {p.a}", fontsize=7)
        row[1].set_title(f"photo {p.b}: cosine {p.cosine:.3f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def describe(pair: dict) -> str:
    """One line for a terminal: `SetIndex.pair`'s probability (or cosine) and its photo pairs, best first."""
    known = pair.get("probability") is not None
    head = f"P(same) {pair['probability']:.3f}" if known else f"cosine {pair['score']:.3f}"
    return f"{head}; photo pairs " + ", ".join(f"{p['a']}-{p['b']} {p['cosine']:.3f}" for p in pair["pairs"])
