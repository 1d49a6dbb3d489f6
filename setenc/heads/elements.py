"""Element parts: what an article's set holds besides plain photo vectors, added before pooling.

`ViewEmbedding` adds a learned vector per view tag to each photo (a view-aware head; ids from `setenc.heads.views`);
`TitleElement` appends the article's title vector as one more element (learned fusion). Both start at zero, so an
untrained head with them ranks exactly as its photos-only, tag-free self.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from setenc.heads.parts import Element
from setenc.heads.views import UNKNOWN


class ViewEmbedding(Element):
    """One learned vector per known tag plus one for unknown, zero at init: the head starts as its tag-free self."""

    key = "views"

    def __init__(self, vocab: Sequence[str], dim: int):
        super().__init__()
        self.vocab = list(vocab)
        self.table = nn.Embedding(len(self.vocab) + 1, dim)
        nn.init.zeros_(self.table.weight)

    @classmethod
    def build(cls, in_dim: int, views: Sequence[str]) -> "ViewEmbedding":
        return cls(views, in_dim)

    @property
    def config(self) -> dict:
        return {"views": list(self.vocab)}

    def forward(self, x: torch.Tensor, mask: torch.Tensor, ids: torch.Tensor | None):
        """x (B, N, D) + the vector of each photo's view; ids (B, N) long, None = every photo unknown."""
        if ids is None:
            return x + self.table.weight[UNKNOWN], mask
        if ids.shape != x.shape[:2]:
            raise ValueError(f"view ids {tuple(ids.shape)} must match the photos {tuple(x.shape[:2])}")
        known = (ids >= 0) & (ids <= len(self.vocab))  # anything else (-1 = no tag, as matchers write it): unknown
        return x + self.table(torch.where(known, ids, UNKNOWN)), mask


class TitleElement(Element):
    """Learned fusion: an article's title vector as one more set element, `W·title + modality`, pooled with the
    photos by the head's own pooling and trained with its contrastive loss.

    `W` (title dim -> photo dim) and the modality vector start at zero, so an untrained `mean` / `proj` head ranks
    by the photos exactly as its photos-only self (a zero element only rescales the mean); a zero title row adds
    no element, and `titles=None` adds none at all.
    """

    key = "titles"

    def __init__(self, dim: int, photo_dim: int):
        super().__init__()
        if dim < 1:
            raise ValueError(f"title vectors must have a positive size, got {dim}")
        self.dim = int(dim)
        self.proj = nn.Linear(dim, photo_dim, bias=False)
        self.modality = nn.Parameter(torch.zeros(photo_dim))
        nn.init.zeros_(self.proj.weight)

    @classmethod
    def build(cls, in_dim: int, titles: int) -> "TitleElement":
        return cls(titles, in_dim)

    @property
    def config(self) -> dict:
        return {"titles": self.dim}

    def allows_empty(self, titles: torch.Tensor | None) -> bool:
        return titles is not None  # an article may be its title alone

    def forward(self, x: torch.Tensor, mask: torch.Tensor, titles: torch.Tensor | None):
        """(B, N, D), (B, N), (B, T) -> the sets with the title appended: (B, N + 1, D), (B, N + 1)."""
        if titles is None:
            return x, mask
        if titles.shape != (x.shape[0], self.dim):
            raise ValueError(f"titles {tuple(titles.shape)} must be ({x.shape[0]}, {self.dim}): one vector per set")
        titles = titles.to(x.dtype)
        element = self.proj(titles) + self.modality  # (B, D)
        has = titles.abs().sum(dim=1) > 0  # (B,) zero row = no title
        return torch.cat([x, element[:, None]], dim=1), torch.cat([mask, has[:, None]], dim=1)
