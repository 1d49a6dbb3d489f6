"""What a head learns about a set's elements beyond their photo vectors: view tags and the title element.

View tags as ids, and the learned view embedding a view-aware head adds to each photo before pooling.

A catalogue may tag each photo with a view (`front`, `side`, ...: `Article.views`). A view-aware head learns one
vector per tag of its training catalogue plus one for "unknown", and adds the photo's vector before pooling:
photos of the same view are still pooled without order (the set stays a set), but a front and a side photo now
contribute differently — the seed article's ordered case inside one set vector.

Id 0 is "unknown": an untagged photo, a tag the training catalogue never had, or a set whose rows no longer line
up with its tags (a photo that could not be embedded was dropped). Ids 1.. are the vocabulary's tags, sorted.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

UNKNOWN = 0


def view_vocabulary(views: Iterable[Sequence[str] | None]) -> list[str]:
    """The sorted distinct tags of these articles' `views` (untagged articles add nothing)."""
    return sorted({t for tags in views if tags for t in tags})


def view_ids(tags: Sequence[str] | None, rows: int, vocab: Sequence[str], per_photo: int = 1) -> np.ndarray:
    """`(rows,)` int64 ids of one set's rows: each photo's tag id, repeated `per_photo` times (TTA `elements`).

    All unknown when the set has no tags or its rows do not match them (photos dropped at embedding).
    """
    return _ids(tags, rows, _index(vocab), per_photo)


def _index(vocab: Sequence[str]) -> dict[str, int]:
    return {t: k + 1 for k, t in enumerate(vocab)}


def _ids(tags: Sequence[str] | None, rows: int, index: dict[str, int], per_photo: int) -> np.ndarray:
    if not tags or rows != len(tags) * per_photo:
        return np.full(rows, UNKNOWN, np.int64)
    return np.repeat(np.array([index.get(t, UNKNOWN) for t in tags], np.int64), per_photo)


def sets_view_ids(sets: Sequence[np.ndarray], views: Sequence[Sequence[str] | None] | None, vocab: Sequence[str],
                  per_photo: int = 1) -> list[np.ndarray]:
    """`view_ids` of every set; `views=None` = every photo unknown."""
    views = views if views is not None else [None] * len(sets)
    if len(views) != len(sets):
        raise ValueError(f"{len(sets)} sets but {len(views)} view-tag lists: give one (or None) per set")
    index = _index(vocab)  # once, not once per set
    return [_ids(v, len(s), index, per_photo) for s, v in zip(sets, views)]


class ViewEmbedding(nn.Module):
    """One learned vector per known tag plus one for unknown, zero at init: the head starts as its tag-free self."""

    def __init__(self, vocab: Sequence[str], dim: int):
        super().__init__()
        self.vocab = list(vocab)
        self.table = nn.Embedding(len(self.vocab) + 1, dim)
        nn.init.zeros_(self.table.weight)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """x (B, N, D) + the vector of each photo's view; ids (B, N) long, None = every photo unknown."""
        if ids is None:
            return x + self.table.weight[UNKNOWN]
        if ids.shape != x.shape[:2]:
            raise ValueError(f"view ids {tuple(ids.shape)} must match the photos {tuple(x.shape[:2])}")
        known = (ids >= 0) & (ids <= len(self.vocab))  # anything else (-1 = no tag, as matchers write it): unknown
        return x + self.table(torch.where(known, ids, UNKNOWN))


class TitleElement(nn.Module):
    """Learned fusion: an article's title vector as one more set element, `W·title + modality`, pooled with the
    photos by the head's own pooling and trained with its contrastive loss.

    `W` (title dim -> photo dim) and the modality vector start at zero, so an untrained `mean` / `proj` head ranks
    by the photos exactly as its photos-only self (a zero element only rescales the mean); a zero title row adds
    no element.
    """

    def __init__(self, dim: int, photo_dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"title vectors must have a positive size, got {dim}")
        self.dim = int(dim)
        self.proj = nn.Linear(dim, photo_dim, bias=False)
        self.modality = nn.Parameter(torch.zeros(photo_dim))
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, titles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, D), (B, N), (B, T) -> the sets with the title appended: (B, N + 1, D), (B, N + 1)."""
        if titles.shape != (x.shape[0], self.dim):
            raise ValueError(f"titles {tuple(titles.shape)} must be ({x.shape[0]}, {self.dim}): one vector per set")
        titles = titles.to(x.dtype)
        element = self.proj(titles) + self.modality  # (B, D)
        has = titles.abs().sum(dim=1) > 0  # (B,) zero row = no title
        return torch.cat([x, element[:, None]], dim=1), torch.cat([mask, has[:, None]], dim=1)
