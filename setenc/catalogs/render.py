"""Ray-cast textured 3-D product shapes in numpy: the pixels of the synthetic demo catalog.

A product is a union of analytic primitives (capped cone frustums, boxes, spheres) in object space — y up, its
front facing the camera at yaw 0 — painted with a procedural print (pattern, label, logo, text lines, a barcode
on the back) and lit with Lambert + Blinn-Phong shading. A photo is an orthographic view from a given yaw and
pitch, placed in the frame with jittered scale, roll, shear and crop, over a plain / gradient / noisy / cluttered
background, under a random light, brightness, contrast, colour cast and sensor noise. Nothing here is a real photo.

A `Scene` is a capture session: its photos share the backdrop (cropped anew each time), light and framing scale.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Colour = tuple[float, float, float]

# shape -> its parts (kind, dims, material); the object spans y in [-1, 1] before scaling.
# "frustum" dims (y0, y1, r0, r1): a capped cone frustum around the y axis (a cylinder when r0 == r1).
SHAPES: dict[str, tuple[tuple[str, tuple[float, ...], str], ...]] = {
    "box": (("box", (0.7, 1.0, 0.32), "body"),),
    "can": (("frustum", (-0.9, 0.8, 0.55, 0.55), "body"), ("frustum", (0.8, 0.9, 0.55, 0.5), "lid")),
    "bottle": (
        ("frustum", (-1.0, 0.2, 0.42, 0.42), "body"),
        ("frustum", (0.2, 0.55, 0.42, 0.16), "body"),
        ("frustum", (0.55, 0.8, 0.16, 0.16), "body"),
        ("frustum", (0.8, 1.0, 0.19, 0.19), "lid"),
    ),
    "jar": (("frustum", (-0.8, 0.45, 0.62, 0.62), "body"), ("frustum", (0.45, 0.75, 0.66, 0.66), "lid")),
    "ball": (("sphere", (0.85,), "body"),),
    "cone": (("frustum", (-0.9, 0.95, 0.72, 0.0), "body"),),
    "cup": (("frustum", (-0.8, 0.64, 0.42, 0.6), "body"), ("frustum", (0.64, 0.7, 0.6, 0.62), "inside")),
}
# where a label fits on each shape: (y0, y1) in object units
LABEL_ZONES: dict[str, tuple[float, float]] = {
    "box": (-0.6, 0.55), "can": (-0.6, 0.5), "bottle": (-0.8, 0.05), "jar": (-0.6, 0.3),
    "ball": (-0.35, 0.35), "cone": (-0.7, -0.05), "cup": (-0.5, 0.45),
}
HAS_BARCODE = ("box", "can", "bottle", "jar")

# print patterns on (s, y): arc length around the product (0 = front centre) and height, f = repeats per unit
PATTERNS = {
    "plain": lambda s, y, f: np.zeros(s.shape, bool),
    "striped": lambda s, y, f: np.floor(y * f) % 2 == 0,
    "banded": lambda s, y, f: np.floor(s * f) % 2 == 0,
    "checked": lambda s, y, f: (np.floor(s * f) + np.floor(y * f)) % 2 == 0,
    "dotted": lambda s, y, f: (np.mod(s * f, 1) - 0.5) ** 2 + (np.mod(y * f, 1) - 0.5) ** 2 < 0.07,
    "wavy": lambda s, y, f: np.sin(2 * np.pi * (y * f + 0.3 * np.sin(np.pi * s * f))) > 0.3,
    "diagonal": lambda s, y, f: np.floor((s + y) * f) % 2 == 0,
}
# logo marks on local coordinates (a, b) in units of the logo radius, b up
LOGOS = {
    "circle": lambda a, b: a * a + b * b < 1,
    "ring": lambda a, b: np.abs(a * a + b * b - 0.65) < 0.3,
    "square": lambda a, b: np.maximum(np.abs(a), np.abs(b)) < 0.8,
    "diamond": lambda a, b: np.abs(a) + np.abs(b) < 1,
    "triangle": lambda a, b: (b > -0.75) & (np.abs(a) < (0.9 - b) * 0.6),
    "cross": lambda a, b: ((np.abs(a) < 0.3) & (np.abs(b) < 1)) | ((np.abs(b) < 0.3) & (np.abs(a) < 1)),
    "star": lambda a, b: np.hypot(a, b) < 0.6 + 0.35 * np.cos(5 * np.arctan2(a, b)),
    "bars": lambda a, b: (np.abs(a) < 1) & (np.abs(b) < 0.9) & (np.floor((a + 1) * 2.5) % 2 == 0),
}
BACKGROUNDS = ("plain", "gradient", "noise", "clutter")
BACKDROPS = ("plain", "gradient", "checks", "stripes", "clutter")  # a session's set


@dataclass(frozen=True)
class Scene:
    """A capture session: what every photo taken in it shares."""

    backdrop: str  # key of BACKDROPS
    palette: tuple[Colour, Colour, Colour]  # the set's colours, RGB in [0, 1]
    cast: Colour  # light colour: per-channel gain on the whole photo
    light: tuple[float, float, float]  # light direction (x right, y up, z towards the scene)
    zoom: float  # how large the product is framed
    period: float  # checks / stripes: repeats across the frame
    layout: int  # seed of the clutter layout


@dataclass(frozen=True)
class Look:
    """How one article's product looks: its group's design plus the article's own small variations."""

    shape: str  # key of SHAPES
    scale: tuple[float, float]  # (width, height) multipliers of the shape's geometry
    base: Colour  # body colour, RGB in [0, 1]
    accent: Colour  # pattern colour
    pattern: str  # key of PATTERNS
    freq: float  # pattern repeats per object unit
    label: Colour | None  # label colour; None = no label
    band: tuple[float, float]  # label band (y0, y1) in object units
    wrap: bool  # the label goes all around (else a patch on the front)
    logo: str  # key of LOGOS
    mark: Colour  # logo colour
    lid: Colour  # lid / cap colour
    gloss: float  # specular strength in [0, 1]
    text: tuple[float, float]  # half-lengths of the two text lines printed on the label
    barcode: int  # 24 bits printed on the back


def _frustum(o: np.ndarray, d: np.ndarray, y0: float, y1: float, r0: float, r1: float):
    """Nearest hit of rays o + t d (o: (M, 3), d: (3,)) with a capped frustum: t (inf = missed), surface code."""
    k = (r1 - r0) / (y1 - y0)
    a = r0 - k * y0  # radius r(y) = a + k y
    ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
    dx, dy, dz = d
    ra = a + k * oy
    qa = dx * dx + dz * dz - k * k * dy * dy
    qa = qa if abs(qa) > 1e-9 else 1e-9
    qb = 2 * (ox * dx + oz * dz - k * dy * ra)
    qc = ox * ox + oz * oz - ra * ra
    disc = qb * qb - 4 * qa * qc
    sq = np.sqrt(np.maximum(disc, 0))
    best = np.full(len(o), np.inf, np.float32)
    for t in ((-qb - sq) / (2 * qa), (-qb + sq) / (2 * qa)):
        y = oy + t * dy
        ok = (t > 0) & (y >= y0) & (y <= y1) & (a + k * y >= 0) & (t < best)
        best = np.where(ok, t, best)
    best[disc < 0] = np.inf
    code = np.zeros(len(o), np.int8)  # 0 side, 1 bottom cap, 2 top cap
    if abs(dy) > 1e-9:
        for c, (yc, rc) in enumerate(((y0, r0), (y1, r1)), 1):
            t = (yc - oy) / dy
            ok = (t > 0) & ((ox + t * dx) ** 2 + (oz + t * dz) ** 2 <= rc * rc) & (t < best)
            best = np.where(ok, t, best)
            code[ok] = c
    return best, code


def _frustum_normal(p: np.ndarray, code: np.ndarray, y0, y1, r0, r1) -> np.ndarray:
    """Normals on a frustum's side and caps; the dims are floats or per-point (K,) arrays."""
    k = (r1 - r0) / (y1 - y0)
    n = np.stack([p[:, 0], -k * (r0 + k * (p[:, 1] - y0)), p[:, 2]], 1)
    n[code == 1] = (0.0, -1.0, 0.0)
    n[code == 2] = (0.0, 1.0, 0.0)
    return n


def _box(o: np.ndarray, d: np.ndarray, hx: float, hy: float, hz: float):
    """Nearest hit with an axis-aligned box of half-extents (hx, hy, hz) (slab method); code = face axis."""
    h = np.array([hx, hy, hz])
    inv = 1.0 / np.where(np.abs(d) < 1e-9, 1e-9, d)
    t1, t2 = (-h - o) * inv, (h - o) * inv  # (M, 3)
    tn = np.minimum(t1, t2)
    near, far = tn.max(1), np.maximum(t1, t2).min(1)
    return np.where((near <= far) & (far > 0), near, np.inf), tn.argmax(1).astype(np.int8)


def _box_normal(p: np.ndarray, code: np.ndarray, hx: float, hy: float, hz: float) -> np.ndarray:
    n = np.zeros_like(p)
    rows = np.arange(len(p))
    n[rows, code] = np.sign(p[rows, code])
    return n


def _sphere(o: np.ndarray, d: np.ndarray, r: float):
    b = o @ d
    disc = b * b - (o * o).sum(1) + r * r
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc >= 0) & (t > 0), t, np.inf), np.zeros(len(o), np.int8)


PRIMITIVES = {
    "frustum": (_frustum, _frustum_normal),
    "box": (_box, _box_normal),
    "sphere": (_sphere, lambda p, code, r: p.copy()),
}


def _intersect(shape: str, o: np.ndarray, d: np.ndarray):
    """Nearest hit over a shape's parts: t (M,) (inf = missed), part index (M,), surface code (M,)."""
    t = np.full(len(o), np.inf, np.float32)
    part = np.zeros(len(o), np.int8)
    code = np.zeros(len(o), np.int8)
    for i, (kind, dims, _) in enumerate(SHAPES[shape]):
        ti, ci = PRIMITIVES[kind][0](o, d, *dims)
        ok = ti < t
        t = np.where(ok, ti, t)
        part[ok], code[ok] = i, ci[ok]
    return t, part, code


def _normals(shape: str, p: np.ndarray, part: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Outward normals (K, 3), unnormalised, at hit points p of the given parts and surfaces."""
    parts = SHAPES[shape]
    if len(parts) == 1:
        kind, dims, _ = parts[0]
        return PRIMITIVES[kind][1](p, code, *dims)
    dims = np.array([d for _, d, _ in parts], np.float32)[part]  # multi-part shapes are frustum stacks: (K, 4)
    return _frustum_normal(p, code, *dims.T)


def _radius(shape: str) -> float:
    """Radius of the sphere around the origin that holds the (unscaled) shape."""
    r = 0.0
    for kind, dims, _ in SHAPES[shape]:
        if kind == "box":
            r = max(r, float(np.linalg.norm(dims)))
        elif kind == "sphere":
            r = max(r, dims[0])
        else:
            r = max(r, math.hypot(max(dims[2:]), max(abs(dims[0]), abs(dims[1]))))
    return r


def _arc(shape: str, p: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
    """Arc length s around the product (0 = front centre, ±half at the back) and that half perimeter."""
    x, z = p[:, 0], p[:, 2]
    if shape != "box":
        radius = max(max(dims[-2:]) if kind == "frustum" else dims[0] for kind, dims, _ in SHAPES[shape])
        return np.arctan2(x, -z) * radius, math.pi * radius
    hx, _, hz = SHAPES["box"][0][1]
    half = 2 * hx + 2 * hz
    nx, nz = normal[:, 0], normal[:, 2]
    s = np.select(
        [nx > 0.5, nx < -0.5, nz > 0.5],
        [hx + z + hz, -hx - z - hz, np.where(x > 0, half - x, -half - x)],
        default=x,
    )
    return s, half


def _paint(look: Look, p: np.ndarray, normal: np.ndarray, material: np.ndarray) -> np.ndarray:
    """Albedo (K, 3) float32 of the hit points p (object units, before scaling)."""
    s, half = _arc(look.shape, p, normal)
    y = p[:, 1]
    colour = np.empty((len(p), 3), np.float32)
    colour[:] = look.base
    colour[PATTERNS[look.pattern](s, y, look.freq)] = look.accent
    y0, y1 = look.band
    if look.label is not None:
        colour[(y > y0) & (y < y1) & (look.wrap | (np.abs(s) < 0.62 * min(half / 2, 1.0)))] = look.label
        for k, length in enumerate(look.text):  # two printed text lines under the logo
            colour[(np.abs(y - (y0 + (0.14 + 0.13 * k) * (y1 - y0))) < 0.025) & (np.abs(s) < length)] = 0.12
    yc = (y0 + y1) / 2 + (0.1 * (y1 - y0) if look.label is not None else 0)
    radius = min(0.24, 0.3 * (y1 - y0))
    colour[LOGOS[look.logo](s / radius, (y - yc) / radius)] = look.mark
    if look.shape in HAS_BARCODE:
        back = np.where(s > 0, half - s, -half - s)  # signed distance from the back centre line
        code = (np.abs(back) < 0.2) & (y > y0) & (y < y0 + 0.28)
        bits = (look.barcode >> np.clip(((back[code] + 0.2) / 0.4 * 24).astype(int), 0, 23)) & 1
        colour[code] = np.where(bits[:, None] == 1, 0.08, 0.95)
    colour[material == "lid"] = look.lid
    colour[material == "inside"] = np.asarray(look.base) * 0.3
    return colour


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    """Object -> camera rotation (float32): turn the product by yaw, then tip its top towards the camera by pitch."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    return (rx @ ry).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Centres of step x step pixel blocks on the camera plane, in [-1, 1] with y up: gx, gy (H, W) float32."""
    px = ((np.arange(0, size, step) + step / 2) / size * 2 - 1).astype(np.float32)
    gx, gy = np.meshgrid(px, -px)
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) float32 backdrop: plain, gradient, low-frequency noise or out-of-focus clutter."""
    kind = BACKGROUNDS[rng.choice(4, p=[0.35, 0.25, 0.2, 0.2])]
    light = (0.75 + 0.25 * rng.random(3)).astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(light, (size, size, 3)).copy()
    if kind == "gradient":
        gx, gy = _grid(size)
        angle = rng.uniform(0, 2 * math.pi)
        w = (gx * math.cos(angle) + gy * math.sin(angle))[..., None] * 0.5 + 0.5  # (H, W, 1)
        return light + (rng.random(3).astype(np.float32) - light) * w
    if kind == "noise":
        k = int(rng.integers(3, 8))
        grid = (light * 0.5 + rng.random((k, k, 3)) * 0.5) * 255
        return np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32) / 255
    img = Image.new("RGB", (size, size), tuple(int(c * 255) for c in light))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        fill = tuple(int(c) for c in rng.integers(40, 230, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
    return np.asarray(img.filter(ImageFilter.BoxBlur(size / 80)), np.float32) / 255


@functools.lru_cache(maxsize=64)
def _set(scene: Scene, size: int) -> np.ndarray:
    """The session's backdrop, 1.5x the photo side (photos crop it at random offsets); read-only float32."""
    big = size * 3 // 2
    a, b, c = (np.asarray(p, np.float32) for p in scene.palette)
    gx, gy = _grid(big)
    if scene.backdrop == "plain":
        out = a + (b - a) * 0.15 * (gx**2 + gy**2)[..., None]  # a faint vignette
    elif scene.backdrop == "gradient":
        out = a + (b - a) * ((gx * 0.6 + gy * 0.8)[..., None] * 0.5 + 0.5)
    elif scene.backdrop == "checks":
        f = scene.period * 1.5 / 2
        out = np.where(((np.floor(gx * f) + np.floor(gy * f)) % 2 == 0)[..., None], a, b)
    elif scene.backdrop == "stripes":
        f = scene.period * 1.5 / 2
        out = np.where((np.floor((gx + 0.5 * gy) * f) % 3)[..., None] == 0, c, np.where((gy > 0)[..., None], a, b))
    else:
        rng = np.random.default_rng(scene.layout)
        img = Image.new("RGB", (big, big), tuple(int(v * 255) for v in a))
        draw = ImageDraw.Draw(img)
        for k in range(int(rng.integers(10, 18))):
            x0, y0 = rng.integers(-big // 4, big, 2)
            w, h = rng.integers(big // 10, big // 3, 2)
            fill = tuple(int(v * 255) for v in np.clip((a, b, c)[k % 3] + rng.normal(0, 0.06, 3), 0, 1))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=fill)
        out = np.asarray(img.filter(ImageFilter.BoxBlur(big / 100)), np.float32) / 255
    out = np.ascontiguousarray(np.broadcast_to(out, (big, big, 3)), np.float32)
    out.flags.writeable = False
    return out


def _trace(look: Look, gx: np.ndarray, gy: np.ndarray, frame: tuple[float, ...], rot: np.ndarray):
    """Cast one ray per camera-plane point (gx, gy: (M,)); returns t, part, code and the ray origins (M, 3)."""
    a, b, c, d, sx, sy = frame  # camera plane -> object units: q = [[a, b], [c, d]] @ (g - shift)
    qx, qy = a * (gx - sx) + b * (gy - sy), c * (gx - sx) + d * (gy - sy)
    origin = qx[:, None] * rot[0] + qy[:, None] * rot[1] - 4.0 * rot[2]  # object space (M, 3)
    scale = np.array([look.scale[0], look.scale[1], look.scale[0]], np.float32)
    return (*_intersect(look.shape, origin / scale, rot[2] / scale), origin)


def render_photo(look: Look, yaw: float, pitch: float, rng: np.random.Generator, size: int = 128,
                 scene: Scene | None = None) -> Image.Image:
    """One photo of the product seen from (yaw, pitch) in degrees; framing, light and backdrop drawn from rng.

    With a `scene`, the backdrop, light and framing scale are the session's, jittered a little per photo.
    """
    crop = scene is None and rng.random() < 0.15
    zoom = rng.uniform(0.6, 0.8) * (rng.uniform(1.35, 1.7) if crop else 1.0)
    if scene is not None:
        zoom = scene.zoom * rng.uniform(0.92, 1.08)
    roll, shear, squash = rng.normal(0, 0.1), rng.uniform(-0.15, 0.15), rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.12, 0.12, 2) * (3 if crop else 1)
    c, s = math.cos(roll), math.sin(roll)
    inv = np.linalg.inv(zoom * np.array([[c, -s], [s, c]]) @ np.array([[squash, shear], [0, 1 / squash]]))
    frame = (*(float(v) for v in inv.ravel()), float(shift[0]), float(shift[1]))
    rot = _rotation(math.radians(yaw), math.radians(pitch))

    # coarse pass at 1/4 resolution finds the silhouette; full-resolution rays only near it
    cx, cy = _grid(size, 4)
    coarse = np.isfinite(_trace(look, cx.ravel(), cy.ravel(), frame, rot)[0]).reshape(cx.shape)
    near = np.pad(coarse, 1)
    near = np.max([near[i : i + cx.shape[0], j : j + cx.shape[1]] for i in range(3) for j in range(3)], 0)
    near = np.repeat(np.repeat(near, 4, 0), 4, 1)[:size, :size].ravel()
    gx, gy = _grid(size)
    t, part, code, origin = _trace(look, gx.ravel()[near], gy.ravel()[near], frame, rot)
    hit = np.isfinite(t)
    scale = np.array([look.scale[0], look.scale[1], look.scale[0]], np.float32)
    p = (origin[hit] + t[hit, None] * rot[2]) / scale  # unscaled object coordinates (K, 3)
    normal = _normals(look.shape, p, part[hit], code[hit])
    material = np.array([m for _, _, m in SHAPES[look.shape]])[part[hit]]
    albedo = _paint(look, p, normal, material)
    n = normal / scale
    n = n / np.linalg.norm(n, axis=1, keepdims=True) @ rot.T  # camera-space unit normals (K, 3)

    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(0.2, 0.9), -rng.uniform(0.4, 1.0)], np.float32)
    if scene is not None:
        light = np.asarray(scene.light, np.float32) + light * 0.15
    light /= np.linalg.norm(light)
    halfway = light + np.array([0, 0, -1], np.float32)
    halfway /= np.linalg.norm(halfway)
    ambient = float(rng.uniform(0.3, 0.45))
    diffuse = np.clip(n @ light, 0, None)[:, None]
    specular = look.gloss * np.clip(n @ halfway, 0, None)[:, None] ** (12 + 50 * look.gloss)
    shaded = albedo * (ambient + (1 - ambient) * diffuse) + 0.6 * specular

    if scene is None:
        img = _background(rng, size)
    else:
        x0, y0 = rng.integers(0, size // 2 + 1, 2)
        img = _set(scene, size)[y0 : y0 + size, x0 : x0 + size].copy()
    shadow = Image.fromarray((coarse * 89).astype(np.uint8)).filter(ImageFilter.BoxBlur(1))  # 89 / 255 = 0.35
    shadow = np.asarray(shadow.resize((size, size), Image.BILINEAR), np.float32)[..., None] * (-1 / 255)
    img *= np.roll(shadow + 1, (int(size * 0.05), int(-light[0] * size * 0.06)), axis=(0, 1))
    img = img.reshape(-1, 3)
    img[np.flatnonzero(near)[hit]] = shaded

    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.15)
    gain = (contrast * brightness * (1 + rng.normal(0, 0.05, 3))).astype(np.float32)  # with a colour cast
    if scene is not None:
        gain *= np.asarray(scene.cast, np.float32)
    img *= gain * 255
    img += (0.5 - 0.5 * contrast) * gain / contrast * 255 + 0.5
    img = img.reshape(size, size, 3)
    if rng.random() < 0.6:  # sensor noise
        img += rng.standard_normal((size, size, 1), np.float32) * float(rng.uniform(1.2, 6.5))
    out = Image.fromarray(np.clip(img, 0, 255, out=img).astype(np.uint8))
    return out.filter(ImageFilter.BoxBlur(0.5))
