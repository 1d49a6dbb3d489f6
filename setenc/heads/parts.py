"""What a head is composed of besides its pooling: parts, each with its own config entry.

A head is a list of parts put together (`setenc.heads.model.ArticleHead`), as a sentence-transformers model is a
list of modules: **elements** change what the set holds before pooling (a learned vector per view tag, the title as
one more element), the **pooling** (`setenc.heads.pooling`, by name) turns the set into one unit vector, and
**extensions** append to that vector (the class block). A new kind of element or extension is one new `Part`
subclass listed in `setenc.heads.model.PARTS`, not another option on every head.

A part's `key` names its entry in the head's config (`{"views": [...]}`, `{"classes": [...], "class_weight": w}`),
its slot in the state dict (`elements.<key>.*`, `extensions.<key>.*`), and, for an element, the batch input it reads
(`forward(x, mask, views=..., titles=...)`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Part(nn.Module):
    """A piece of a head, rebuilt from its config entry: `type(part).build(in_dim, **part.config)`."""

    key: str = ""  # its config key, state-dict slot and (for an element) the batch input it reads
    stage: str = ""  # "element" (before pooling) or "extension" (after)

    @classmethod
    def build(cls, in_dim: int, **config: Any) -> "Part":
        """The part from its config entry (`config[cls.key]` and its other keys), for photo vectors of `in_dim`."""
        raise NotImplementedError

    @property
    def config(self) -> dict:
        """Its entry in the head's config: `{key: value, ...}`."""
        raise NotImplementedError


class Element(Part):
    """Changes the set before pooling: `(x (B, N, D), mask (B, N), its input) -> (x', mask')`."""

    stage = "element"

    def allows_empty(self, value: torch.Tensor | None) -> bool:
        """Whether a set may arrive with no photos because this element adds one (a title-only article)."""
        return False

    def forward(self, x: torch.Tensor, mask: torch.Tensor, value: torch.Tensor | None):
        raise NotImplementedError


class Extension(Part):
    """Extends the pooled unit vector: `(z (B, E), photos x (B, N, D), mask (B, N)) -> (B, E + extra_dim)`."""

    stage = "extension"
    extra_dim: int = 0

    def forward(self, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
