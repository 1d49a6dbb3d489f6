"""The generated demo catalog: SYNTHETIC multi-view product photos, so setenc runs anywhere with nothing downloaded.

No photo in it is real. Each group is a procedurally designed product family (a shape — box, can, bottle, jar,
ball, cone, cup — with a colour scheme, print pattern, label and logo); its articles are 2–4 listings of the
product (small tint and size changes), each 1–5 photos rendered by `setenc.catalogs.render` from tagged angles
(front / angle / side / back / top). About a third of the families are near-copies of another family with one
attribute changed (hard negatives), and many share shape or colour.

The catalogue teaches what a learned set head is for. Every article is shot in a capture *session* (a `Scene`: a
saturated backdrop, light colour and direction, framing scale) shared with articles of ~40 OTHER products, and the
articles of one product always come from different sessions. What tells products apart (the design) is consistent
across sessions; what a frozen backbone's photo vectors are dominated by (the session) is shared with wrong
products: a near-copy family is shot in its parent's sessions. Queries (`partition: query`) search gallery
articles from other sessions, as in a real catalogue; `session` is in each article's meta, so training draws
group positives across sessions. The catalog is deterministic in its parameters and generated once into the
cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from setenc.catalogs.manifest import Article, Catalog, write_catalog
from setenc.plumbing.errors import CatalogError
from setenc.plumbing.paths import absolute, cache_dir
from setenc.catalogs.render import BACKDROPS, LABEL_ZONES, LOGOS, PATTERNS, SHAPES, Look, Scene, render_photo


DEMO_VERSION = 3  # bump whenever the rendered bytes change, so cached demo catalogs are rebuilt
STAMP = "demo.json"  # written last: a folder without it is not a finished demo catalog
COLOURS = {
    "red": (0.80, 0.12, 0.12), "orange": (0.95, 0.50, 0.10), "yellow": (0.95, 0.82, 0.15),
    "green": (0.20, 0.60, 0.25), "teal": (0.10, 0.55, 0.55), "blue": (0.15, 0.30, 0.80),
    "navy": (0.08, 0.12, 0.40), "purple": (0.50, 0.20, 0.65), "pink": (0.95, 0.50, 0.70),
    "brown": (0.50, 0.30, 0.15), "black": (0.10, 0.10, 0.10), "white": (0.93, 0.93, 0.90),
    "grey": (0.55, 0.55, 0.55), "cream": (0.95, 0.90, 0.75),
}
PATTERN_WORDS = {"plain": "", "striped": "striped", "banded": "banded", "checked": "checked",
                 "dotted": "dotted", "wavy": "wavy", "diagonal": "diagonal-striped"}
# (view tag, yaw, pitch) in degrees; a photo's tag names the angle it was rendered from
POSES = (("front", 0, 10), ("angle", 40, 22), ("angle", -40, 22), ("side", 90, 8), ("side", -90, 8),
         ("back", 180, 10), ("top", 0, 78), ("angle", 145, 22))
ARTICLES_PER_GROUP = (np.arange(2, 5), [0.2, 0.4, 0.4])  # each in its own session; 2 = 1 query + 1 gallery
PHOTOS_PER_ARTICLE = (np.arange(1, 6), [0.36, 0.32, 0.18, 0.09, 0.05])
ARTICLES_PER_SESSION = 40
N_GROUPS = 540  # the default: ~1,750 articles, ~3,700 photos, ~170 group-protocol queries in a 20 % test split


@dataclass(frozen=True)
class Design:
    """A product family (one group): what all its articles share."""

    shape: str  # key of render.SHAPES
    colour: str  # body colour, key of COLOURS
    accent: str  # pattern colour
    pattern: str  # key of render.PATTERNS
    freq: float  # pattern repeats per object unit
    label: str | None  # label colour, None = no label
    band: tuple[float, float]  # label band (y0, y1)
    wrap: bool  # label all around
    logo: str  # key of render.LOGOS
    mark: str  # logo colour
    lid: str  # lid colour
    gloss: float  # specular strength
    aspect: tuple[float, float]  # (width, height) of the family's shape

    @property
    def key(self) -> tuple:
        return self.shape, self.colour, self.accent, self.pattern, self.logo, self.label


def _pick(rng: np.random.Generator, options, exclude=()) -> str:
    return str(rng.choice([o for o in options if o not in exclude]))


def _band(shape: str, rng: np.random.Generator) -> tuple[float, float]:
    y0, y1 = LABEL_ZONES[shape]
    h = y1 - y0
    return y0 + rng.uniform(0, 0.15) * h, y1 - rng.uniform(0, 0.15) * h


def _design(rng: np.random.Generator) -> Design:
    shape, colour = _pick(rng, SHAPES), _pick(rng, COLOURS)
    label = _pick(rng, COLOURS, (colour,)) if rng.random() < 0.7 else None
    return Design(
        shape=shape, colour=colour, accent=_pick(rng, COLOURS, (colour,)), pattern=_pick(rng, PATTERNS),
        freq=rng.uniform(2.0, 4.5), label=label, band=_band(shape, rng), wrap=bool(rng.random() < 0.4),
        logo=_pick(rng, LOGOS), mark=_pick(rng, COLOURS, (label or colour,)), lid=_pick(rng, COLOURS),
        gloss=rng.uniform(0.1, 0.9), aspect=(rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)),
    )


def _sibling(d: Design, rng: np.random.Generator) -> Design:
    """A hard negative: the same family look with one attribute changed."""
    what = _pick(rng, ("colour", "accent", "pattern", "logo", "shape", "label"))
    if what == "shape":
        shape = _pick(rng, SHAPES, (d.shape,))
        return replace(d, shape=shape, band=_band(shape, rng))
    if what == "pattern":
        return replace(d, pattern=_pick(rng, PATTERNS, (d.pattern,)))
    if what == "logo":
        return replace(d, logo=_pick(rng, LOGOS, (d.logo,)))
    if what == "label":
        return replace(d, label=_pick(rng, COLOURS, (d.colour, d.label)))
    return replace(d, **{what: _pick(rng, COLOURS, (d.colour, d.accent))})


def _families(seed: int, n_groups: int) -> tuple[list[Design], list[int | None]]:
    """The designs and, for each near-copy, the family it copies (else None)."""
    rng = np.random.default_rng([seed, 0])
    out: list[Design] = []
    parents: list[int | None] = []
    keys: set[tuple] = set()
    while len(out) < n_groups:
        parent = int(rng.integers(len(out))) if out and rng.random() < 0.35 else None
        d = _sibling(out[parent], rng) if parent is not None else _design(rng)
        if d.key not in keys:
            keys.add(d.key)
            out.append(d)
            parents.append(parent)
    return out, parents


def _designs(seed: int, n_groups: int) -> list[Design]:
    return _families(seed, n_groups)[0]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _scenes(seed: int, n: int) -> list[Scene]:
    """n capture sessions: saturated sets in a hue of their own, coloured light, their own framing."""
    rng = np.random.default_rng([seed, 3])
    out = []
    for k in range(n):
        hue = (k / n + rng.uniform(-0.3, 0.3) / n) % 1.0
        palette = tuple(_hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.45, 1.0), rng.uniform(0.35, 0.95))
                        for _ in range(3))
        cast = tuple(float(c) for c in np.clip(1 + rng.normal(0, 0.05, 3), 0.85, 1.15))
        light = (float(rng.uniform(-0.8, 0.8)), float(rng.uniform(0.2, 0.9)), float(-rng.uniform(0.4, 1.0)))
        out.append(Scene(backdrop=str(BACKDROPS[k % len(BACKDROPS)]), palette=palette, cast=cast, light=light,
                         zoom=float(rng.uniform(0.55, 0.85)), period=float(rng.uniform(3, 8)),
                         layout=int(rng.integers(2**31))))
    return out


def _plan(seed: int, parents: list[int | None], counts: list[int], n_sessions: int) -> list[list[int]]:
    """The session of each article of each family: distinct within a family. A near-copy is shot in its parent's
    sessions, rotated so that its gallery article shares the session of the parent's first query."""
    rng = np.random.default_rng([seed, 4])
    plan: list[list[int]] = []
    for parent, n in zip(parents, counts):
        if parent is None:
            plan.append([int(s) for s in rng.choice(n_sessions, n, replace=False)])
            continue
        p = plan[parent]
        mine = [s for s in p[1:]][: n - 1]
        free = [s for s in rng.permutation(n_sessions) if s not in p]
        mine += [int(s) for s in free[: n - 1 - len(mine)]]
        plan.append([*mine, p[0]])
    return plan


def _jitter(name: str, rng: np.random.Generator, sigma: float = 0.03) -> tuple[float, float, float]:
    return tuple(float(c) for c in np.clip(np.asarray(COLOURS[name]) + rng.normal(0, sigma, 3), 0, 1))


def _variant(d: Design, rng: np.random.Generator) -> tuple[Look, str]:
    """One article of the family: small tint, size and print changes, sometimes another label colour."""
    size = rng.uniform(0.82, 1.12)
    label = d.label
    if label is not None and rng.random() < 0.1:
        label = _pick(rng, COLOURS, (d.colour, d.label))
    look = Look(
        shape=d.shape, scale=(d.aspect[0] * size * rng.uniform(0.95, 1.05), d.aspect[1] * size),
        base=_jitter(d.colour, rng), accent=_jitter(d.accent, rng), pattern=d.pattern,
        freq=d.freq * rng.uniform(0.9, 1.1), label=None if label is None else _jitter(label, rng, 0.02),
        band=d.band, wrap=d.wrap, logo=d.logo, mark=_jitter(d.mark, rng, 0.02), lid=_jitter(d.lid, rng),
        gloss=float(np.clip(d.gloss + rng.normal(0, 0.1), 0, 1)), text=tuple(rng.uniform(0.08, 0.4, 2)),
        barcode=int(rng.integers(0, 2**24)),
    )
    words = ["small" if size < 0.9 else "large" if size > 1.05 else "", d.colour, PATTERN_WORDS[d.pattern], d.shape]
    title = " ".join(w for w in words if w)
    if label is not None and label != d.label:
        title += f", {label} label"
    return look, title


def _poses(rng: np.random.Generator) -> list[tuple[str, float, float]]:
    """1–8 distinct jittered poses, usually starting with the front (like a listing's main photo)."""
    n = int(rng.choice(PHOTOS_PER_ARTICLE[0], p=PHOTOS_PER_ARTICLE[1]))
    order = [0, *(1 + rng.permutation(len(POSES) - 1))] if rng.random() < 0.85 else list(rng.permutation(len(POSES)))
    out = []
    for i in order[:n]:
        tag, yaw, pitch = POSES[i]
        yaw = rng.uniform(0, 360) if tag == "top" else yaw + rng.normal(0, 8)
        out.append((tag, float(yaw), float(np.clip(pitch + rng.normal(0, 5), -5, 88))))
    return out


def _queries(n: int) -> int:
    """How many of a family's n articles are queries (the rest, at least one, are its gallery)."""
    return n - n // 2 if n > 1 else 0


def _build(folder: Path, seed: int, n_groups: int, size: int) -> Catalog:
    """Render every photo into folder/images and return the catalog (absolute paths)."""
    designs, parents = _families(seed, n_groups)
    families = []  # (group name, design, [(look, title, poses) per article])
    width = max(3, len(str(n_groups - 1)))
    for g, design in enumerate(designs):
        rng = np.random.default_rng([seed, 1, g])
        n = int(rng.choice(ARTICLES_PER_GROUP[0], p=ARTICLES_PER_GROUP[1]))
        variants = [(*_variant(design, rng), _poses(rng)) for _ in range(n)]
        families.append((f"{g:0{width}d}-{design.colour}-{design.pattern}-{design.shape}", design, variants))
    counts = [len(f[2]) for f in families]
    n_sessions = max(int(ARTICLES_PER_GROUP[0][-1]), round(sum(counts) / ARTICLES_PER_SESSION))
    scenes = _scenes(seed, n_sessions)
    plan = _plan(seed, parents, counts, n_sessions)
    (folder / "images").mkdir(parents=True)
    articles = []
    total = sum(len(f[2]) for f in families)
    with tqdm(total=total, desc="demo catalog", unit="article", disable=None) as bar:
        for g, (group, design, variants) in enumerate(families):
            for k, (look, title, poses) in enumerate(variants):
                images = []
                session = plan[g][k]
                for j, (_, yaw, pitch) in enumerate(poses):
                    images.append(folder / "images" / f"{g:0{width}d}-{k}_{j}.jpg")
                    photo = render_photo(look, yaw, pitch, np.random.default_rng([seed, 2, g, k, j]), size,
                                         scenes[session])
                    photo.save(images[-1], quality=90)
                articles.append(Article(
                    id=f"{g:0{width}d}-{k}", images=tuple(images), group=group, title=title,
                    views=tuple(tag for tag, _, _ in poses),
                    meta={"category": design.shape, "session": f"s{session:03d}"},
                    partition="query" if k < _queries(len(variants)) else "gallery",
                ))
                bar.update()
    return Catalog(articles, folder, name="demo")


def _is_built(folder: Path, params: dict) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return all(stamp.get(k) == v for k, v in params.items()) and (folder / "catalog.jsonl").is_file()


def make_demo_catalog(
    out_dir: str | os.PathLike | None = None, seed: int = 0, n_groups: int = N_GROUPS, size: int = 128
) -> Path:
    """Generate the synthetic demo catalog once and return its manifest path.

    A second call with the same parameters returns at once. The catalog is built in a temporary folder and
    renamed into place, so an interrupted build never leaves a folder that looks finished.

    Args:
        out_dir: where to write it; default: `<cache>/demo/v<version>-seed<seed>-g<n_groups>-px<size>`.
        seed: everything (designs, variants, poses, backgrounds) follows from it; same seed, same bytes.
        n_groups: product families (about 3.2 articles and 8 photos each; ~1.8 queries).
        size: photo side in pixels (JPEG).
    """
    params = {"version": DEMO_VERSION, "seed": seed, "n_groups": n_groups, "size": size}
    if n_groups < 1 or size < 16:
        raise CatalogError(f"demo catalog: need n_groups >= 1 and size >= 16, got {n_groups} and {size}")
    if out_dir is None:
        out = cache_dir("demo") / f"v{DEMO_VERSION}-seed{seed}-g{n_groups}-px{size}"
    else:
        out = absolute(out_dir)
    if _is_built(out, params):
        return out / "catalog.jsonl"
    if out.is_dir() and any(out.iterdir()) and not (out / STAMP).is_file():
        raise CatalogError(f"{out}: folder exists and is not a generated demo catalog; choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"[demo] rendering the synthetic demo catalogue ({n_groups} product families) into {out}: once, later "
          "runs reuse it", file=sys.stderr)  # the first run's longest silence otherwise
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        catalog = _build(tmp, seed, n_groups, size)
        write_catalog(catalog, tmp / "catalog.jsonl")
        stats = {"articles": len(catalog), "photos": len(catalog.image_paths), "groups": n_groups,
                 "queries": sum(a.partition == "query" for a in catalog),
                 "sessions": len({a.meta["session"] for a in catalog}),
                 "note": "synthetic: procedurally rendered products, no real photos"}
        (tmp / STAMP).write_text(json.dumps({**params, **stats}, indent=1) + "\n")
        if _is_built(out, params):  # another process finished the same catalog meanwhile
            return out / "catalog.jsonl"
        if out.is_dir() and any(out.iterdir()):  # an outdated demo catalog (other parameters): swap it out
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, out)
        except OSError:
            if not _is_built(out, params):  # fine if another process just finished the same catalog
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "catalog.jsonl"
