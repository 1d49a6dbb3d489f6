"""Test-time augmentation of photos: flipped / cropped variants of each photo, embedded and cached like any photo.

Why: a frozen backbone's vector of a photo moves when the photo is mirrored or framed a little tighter, though the
product is the same. Averaging a photo's variants (`mean`) steadies its vector and keeps set sizes; adding them as
extra set elements (`elements`) lets a set head or a matcher see each one. One spec string names both, so it fits
one config field, one flag and one checkpoint entry:

    none | flip | crop | flip+crop        mode `mean` (the default)
    flip:elements | flip+crop:elements   every variant is an extra set element
    crop+crop@0.75                       a variant's parameter after `@` (here a second, tighter crop)

Cache keys: a variant's vector is stored under `<content hash>:<variant id>` beside the photo's own
`<content hash>` in the same backbone cache, so plain vectors are never touched and a variant is never read as the
original (content hashes are hex digits only). The variant id carries its parameters (`crop0.875`), so changing
one can never reuse vectors made with another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from setenc.plumbing.errors import SetencError
from setenc.plumbing.registry import Registry

CROP_FRACTION = 0.875  # the classic ImageNet evaluation crop (224 of 256): tighter framing, nothing essential lost


class Flip:
    """Mirror left-right: a product photographed from its other side looks like this more than like the original."""

    id = "hflip"

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


class CentreCrop:
    """Keep the central `fraction` of width and height: the product larger in the frame, the border dropped."""

    def __init__(self, fraction: float = CROP_FRACTION):
        if not 0 < fraction <= 1:
            raise SetencError(f"crop fraction {fraction} must be in (0, 1]")
        self.fraction = float(fraction)
        self.id = f"crop{self.fraction:g}"

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = max(1, round(w * self.fraction)), max(1, round(h * self.fraction))
        left, top = (w - cw) // 2, (h - ch) // 2
        return img.crop((left, top, left + cw, top + ch))


def mean_views(v: np.ndarray) -> np.ndarray:
    """(n, K, D) views of n photos -> (n, D): each photo's unit-normalised mean; set sizes are unchanged."""
    m = v.mean(axis=1)
    return (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def views_as_elements(v: np.ndarray) -> np.ndarray:
    """(n, K, D) -> (n * K, D), photo by photo: every view is a set element (already unit vectors)."""
    return np.ascontiguousarray(v.reshape(-1, v.shape[-1]), dtype=np.float32)


# one registry per kind: the only lists of variant and mode names
VARIANTS: Registry[Callable[[Image.Image], Image.Image]] = Registry("tta variant")
VARIANTS.register("flip", Flip)
VARIANTS.register("crop", CentreCrop)
MODES: Registry[np.ndarray] = Registry("tta mode")
MODES.register("mean", mean_views)
MODES.register("elements", views_as_elements)


def make_variant(item: str) -> Callable[[Image.Image], Image.Image]:
    """`"crop"` or `"crop@0.75"` -> the image operation (its one parameter after `@`, a number)."""
    name, at, param = item.partition("@")
    if not at:
        return VARIANTS.create(VARIANTS.check(name))
    try:
        value = float(param)
    except ValueError:
        raise SetencError(f"tta variant {item!r}: the parameter after '@' must be a number") from None
    options = VARIANTS.options(VARIANTS.check(name))
    if not options:
        raise SetencError(f"tta variant {name!r} takes no parameter; give {name!r} alone")
    return VARIANTS.create(name, **{options[0]: value})


def variant_key(content_hash: str, variant_id: str) -> str:
    """The cache key of one variant of a photo: never equal to a plain content hash (those have no ':')."""
    return f"{content_hash}:{variant_id}"


@dataclass(frozen=True)
class TTA:
    """Which variants each photo gets besides itself, and how they reach the set.

    Build it with `TTA.parse(spec)`; `str(tta)` gives the spec back (what configs and checkpoints record).
    """

    variants: tuple[str, ...] = ()
    mode: str = "mean"

    @classmethod
    def parse(cls, spec: "str | TTA | None") -> "TTA":
        """`None` / "none" -> no augmentation; "flip+crop:elements" -> those variants as set elements."""
        if isinstance(spec, TTA):
            return spec
        if spec is None:
            return cls()
        if not isinstance(spec, str):
            raise SetencError(f"tta {spec!r}: give a string such as none, flip, flip+crop or flip:elements")
        names, _, mode = spec.strip().partition(":")
        mode = MODES.check(mode or "mean")
        if names == "none":
            if spec.strip() != "none":
                raise SetencError(f"tta {spec!r}: 'none' takes no mode; give none, or variants such as flip:{mode}")
            return cls()
        variants = tuple(n.strip() for n in names.split("+"))
        ids = [make_variant(n).id for n in variants]  # checks every name and parameter
        if len(set(ids)) < len(ids):
            raise SetencError(f"tta {spec!r}: a variant is named twice")
        return cls(variants, mode)

    def __str__(self) -> str:
        if not self.variants:
            return "none"
        return "+".join(self.variants) + ("" if self.mode == "mean" else f":{self.mode}")

    @property
    def views(self) -> int:
        """Vectors embedded per photo: the photo itself plus its variants."""
        return 1 + len(self.variants)

    @property
    def per_photo(self) -> int:
        """Set elements each photo becomes: its views in `elements` mode, else one."""
        return self.views if self.mode == "elements" else 1

    def ops(self) -> list[Callable[[Image.Image], Image.Image] | None]:
        """The image operation of each view, None for the photo as it is (first)."""
        return [None] + [make_variant(n) for n in self.variants]

    def backbones(self, backbone) -> list:
        """One backbone per view, in `ops()` order: the backbone itself, then a `ViewBackbone` per variant."""
        return [backbone] + [ViewBackbone(backbone, op) for op in self.ops()[1:]]

    def keys(self, content_hash: str) -> list[str]:
        """Cache keys of a photo's views, in `ops()` order: its content hash, then one key per variant."""
        return [content_hash] + [variant_key(content_hash, op.id) for op in self.ops()[1:]]

    def combine(self, vectors: np.ndarray) -> np.ndarray:
        """`(n * views, D)` vectors, photo by photo -> the set's rows: `(n, D)` (mean) or `(n * views, D)`."""
        if not self.variants:
            return vectors
        return MODES.get(self.mode)(np.asarray(vectors, np.float32).reshape(-1, self.views, vectors.shape[-1]))


class ViewTransform:
    """A variant, then the backbone's own preprocessing. Plain attributes, so DataLoader workers and Ray decode
    tasks can pickle it; `size` is the backbone's input size, as on `ImageTransform`."""

    def __init__(self, op: Callable[[Image.Image], Image.Image], transform):
        self.op, self.transform, self.size = op, transform, transform.size

    def __call__(self, img: Image.Image):
        return self.transform(self.op(img))


class ViewBackbone:
    """The backbone seen through one variant: same `id`, `dim` and forward, only its transform applies the variant
    first. Any embedding engine given it embeds the variant exactly as it embeds photos (decode, batch, write)."""

    def __init__(self, backbone, op):
        self.backbone, self.id, self.dim = backbone, backbone.id, backbone.dim
        self.name = f"{backbone.name} {op.id}"
        self.transform = ViewTransform(op, backbone.transform)

    def encode(self, batch):
        return self.backbone.encode(batch)

    def __getattr__(self, name: str):  # runtime, device, ...: the backbone's own
        if name == "backbone":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.backbone, name)


def embed_views(backbone, images: Sequence[Image.Image], tta: "TTA | str | None") -> np.ndarray:
    """PIL photos -> their set rows under `tta` (no cache): `(n, D)`, or `(n * views, D)` in `elements` mode.

    The one place a query's photos get the same variants as the cached catalogue photos (`photos.embed`), so an
    encoder recording a TTA searches with the vectors its index was built from.
    """
    tta = TTA.parse(tta)
    ops = tta.ops()
    views = [img if op is None else op(img) for img in images for op in ops]
    return tta.combine(backbone.encode_images(views).float().cpu().numpy())


def with_tta(spec: dict, tta: "TTA | str | None") -> dict:
    """A backbone spec (`{"name", "kwargs", "id"}`) recording `tta`: the photo vectors a head takes are the
    backbone's under this TTA, so checkpoints (ours and Lightning's) and exports carry it with the backbone.
    No augmentation leaves no key, so plain specs and checkpoints stay as they were."""
    out = {k: v for k, v in spec.items() if k != "tta"}
    tta = TTA.parse(tta)
    return {**out, "tta": str(tta)} if tta.variants else out


def spec_tta(spec: dict) -> TTA:
    """The TTA a backbone spec records (none when it records none)."""
    return TTA.parse(spec.get("tta"))
