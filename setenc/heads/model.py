"""An article head: elements -> pooling -> extensions, each a part with its own config entry.

`create_head("proj", 1280, views=[...], titles=256, classes=[...])` puts together the pooling head named in the
registry (`setenc.heads.pooling.HEADS`) with the parts whose config keys are given (`PARTS`: view tags and the title
as set elements, the class block as an extension). Its `config` is the pooling head's plus each part's entry, the
plain dict checkpoints store; `create_head(**head.config)` rebuilds it. Checkpoints written before heads were
composed (one module with `view_embed` / `title_element` / `class_block` attributes) load unchanged: their
state-dict keys are renamed on load (`_upgrade_legacy_keys`).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from setenc.heads.classes import ClassBlock
from setenc.heads.elements import TitleElement, ViewEmbedding
from setenc.heads.parts import Part
from setenc.heads.pooling import HEADS, SetHead
from setenc.heads.sets import check_sets
from setenc.plumbing.errors import SetencError

PARTS: dict[str, type[Part]] = {cls.key: cls for cls in (ViewEmbedding, TitleElement, ClassBlock)}  # in forward order
LEGACY_OPTIONS = {"pma": {"heads": "num_heads"}}  # option renames: checkpoints written before them still load
LEGACY_SLOTS = {"view_embed.": "elements.views.", "title_element.": "elements.titles.",
                "class_block.": "extensions.classes."}  # attribute names of the single-module head


class ArticleHead(nn.Module):
    """`forward(x (B, N, D), mask (B, N), views=None, titles=None) -> (B, out_dim)` unit vectors.

    Args:
        pooling: the set -> vector step (a registered head).
        parts: elements and extensions, at most one per key; applied in `PARTS` order.
    """

    def __init__(self, pooling: SetHead, parts: list[Part] = ()):
        super().__init__()
        self.pooling = pooling
        self.elements = nn.ModuleDict()
        self.extensions = nn.ModuleDict()
        for part in sorted(parts, key=lambda p: list(PARTS).index(p.key)):
            self.add(part)
        self.register_load_state_dict_pre_hook(_upgrade_legacy_keys)

    def add(self, part: Part) -> Part:
        """Compose one more part (a class block fitted after training is added this way); returns it."""
        slot = self.elements if part.stage == "element" else self.extensions
        if part.key in self.elements or part.key in self.extensions:
            raise SetencError(f"head {self.name!r} already has a {part.key} part")
        slot[part.key] = part
        return part

    def part(self, key: str) -> Part | None:
        """The part with this key, or None."""
        return self.elements[key] if key in self.elements else self.extensions[key] if key in self.extensions else None

    @property
    def name(self) -> str:
        return self.pooling.name

    @property
    def in_dim(self) -> int:
        return self.pooling.in_dim

    @property
    def out_dim(self) -> int:
        return self.pooling.out_dim + sum(ext.extra_dim for ext in self.extensions.values())

    @property
    def views(self) -> list[str] | None:
        """The view tags this head learned a vector for; None for a tag-free head."""
        part = self.part("views")
        return None if part is None else part.vocab

    @property
    def titles(self) -> int | None:
        """The title-vector size this head fuses (learned fusion); None for a photos-only head."""
        part = self.part("titles")
        return None if part is None else part.dim

    @property
    def classes(self) -> list[str] | None:
        """The classes whose probabilities this head appends; None without a class block."""
        part = self.part("classes")
        return None if part is None else part.classes

    @property
    def config(self) -> dict:
        """Plain constructor arguments; `create_head(**head.config)` rebuilds the same architecture."""
        out = dict(self.pooling.config)
        for part in [*self.elements.values(), *self.extensions.values()]:
            out.update(part.config)
        return out

    def forward(self, x: torch.Tensor, mask: torch.Tensor, views: torch.Tensor | None = None,
                titles: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, D), mask (B, N); views (B, N) long view ids (`setenc.heads.views`), titles (B, T) title vectors
        (zero rows = no title): each read by its element, ignored by a head without one."""
        inputs = {"views": views, "titles": titles}
        empty_ok = any(e.allows_empty(inputs[k]) for k, e in self.elements.items())
        check_sets(x, mask, self.in_dim, empty_ok=empty_ok)
        photos = (x, mask)  # extensions read the photos as given (the class block's probe: their mean)
        for key, element in self.elements.items():
            x, mask = element(x, mask, inputs[key])
        if empty_ok:
            check_sets(x, mask, what="photos + titles")  # each article needs photos or a title
        z = self.pooling(x, mask)  # (B, E)
        for extension in self.extensions.values():
            z = extension(z, *photos)  # (B, E + ...)
        return z


def _upgrade_legacy_keys(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Rename a single-module head's keys (`proj.weight`, `view_embed.table.weight`) to the composed slots."""
    ours = [k for k in state_dict if k.startswith(prefix)]
    slots = ("pooling.", "elements.", "extensions.")
    if not ours or any(k[len(prefix):].startswith(slots) for k in ours):
        return
    for key in ours:
        rest = key[len(prefix):]
        new = next((slot + rest[len(old):] for old, slot in LEGACY_SLOTS.items() if rest.startswith(old)),
                   "pooling." + rest)
        state_dict[prefix + new] = state_dict.pop(key)


def list_heads() -> list[str]:
    """Names accepted by `create_head`."""
    return HEADS.names()


def create_head(name: str, in_dim: int, **kw) -> ArticleHead:
    """Build a head by name, e.g. `create_head("pma", 1280, encoder="sab", seeds=3)`.

    Args:
        name: the pooling, one of `list_heads()`.
        in_dim: width of the photo vectors (the backbone's embedding dim).
        **kw: the pooling's options (unknown ones are an error), and the parts' config entries:
            `views=[tags]` a learned vector per view tag (`setenc.heads.elements.ViewEmbedding`);
            `titles=T` the T-d title vector as one more set element (learned fusion);
            `classes=[names]`, `class_weight=w` the class block (`setenc.heads.classes`, fitted after training).
            An entry of None means no such part.
    """
    for old, new in LEGACY_OPTIONS.get(name, {}).items():
        if old in kw and new not in kw:
            kw[new] = kw.pop(old)
    parts = []
    for key, cls in PARTS.items():
        own = {k: kw.pop(k) for k in [key, *_extra_keys(cls)] if k in kw}
        if own.get(key) is not None:
            parts.append(cls.build(in_dim, **own))
    return ArticleHead(HEADS.create(name, in_dim, **kw), parts)


def _extra_keys(cls: type[Part]) -> list[str]:
    """A part's config keys besides its own (the class block's `class_weight`), read off its `build`."""
    params = list(inspect.signature(cls.build).parameters)
    return [p for p in params if p not in ("in_dim", cls.key)]
