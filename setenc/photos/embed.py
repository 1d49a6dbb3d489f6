"""Embedding photos into the cache, and a catalog's per-article photo vectors out of it.

`embed_catalog` decodes in worker processes and feeds the backbone in batches, writing only photos the cache lacks;
`photo_sets` is the one path from a catalog to per-article `(n_i, D)` photo vectors (embedding what is missing
first) that training, evaluation, export and the experiments all take. With a test-time augmentation (`photos.tta`)
each variant is one more pass of the same engine, written under its own cache key.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from filelock import Timeout
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from setenc.catalogs import Catalog
from setenc.plumbing.errors import SetencError
from setenc.photos.cache import EmbeddingCache
from setenc.photos.decode import load_image
from setenc.photos.tta import TTA


class _PhotoDataset(Dataset):
    """Decodes and preprocesses photos in worker processes; a bad photo becomes an error string, not a crash."""

    def __init__(self, paths: Sequence[Path], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return (i, *decode_photo(self.paths[i], self.transform))


def decode_photo(path: Path, transform) -> tuple[torch.Tensor | None, str | None]:
    """(pixels, None), or (None, why) for a photo that cannot be decoded: one bad photo must not kill a long run.

    Shared by every engine (DataLoader workers here, Ray tasks in `ray_engine`), so both skip the same photos.
    """
    try:
        return transform(load_image(path)), None
    except SetencError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 — an unexpected decoder failure must not kill a long run
        return None, f"{path}: cannot be decoded ({type(e).__name__}: {e})"


def encode_batch(backbone, x: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) pixels -> (B, D) float32 vectors on the CPU: the one forward every engine runs."""
    return backbone.encode(x).float().cpu().numpy()


def write_vectors(writer, todo: Sequence[tuple[str, Path]], vec: np.ndarray, report: EmbedReport) -> None:
    """Write the finite rows of `vec` (row i is the photo `todo[i]` = (hash, path)); name the others as skipped.

    Every engine writes through here, from one process (the cache's single writer).
    """
    ok = np.isfinite(vec).all(1)
    for i in np.flatnonzero(~ok):
        report.skipped.append((str(todo[i][1]), "backbone returned NaN/inf for this photo"))
    writer.add([todo[i][0] for i in np.flatnonzero(ok)], vec[ok])
    report.embedded += int(ok.sum())


def _collate(items):
    good = [(i, t) for i, t, err in items if err is None]
    bad = [(i, err) for i, t, err in items if err is not None]
    x = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], x, bad


@dataclass
class EmbedReport:
    """What one embedding run did; `skipped` lists (path, reason) of photos that could not be embedded."""

    photos: int = 0
    unique: int = 0
    cached: int = 0  # vectors: with a TTA each photo has `views` of them
    embedded: int = 0
    views: int = 1  # vectors per photo: the photo and its TTA variants
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    forward_seconds: float = 0.0

    @property
    def photos_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0

    @property
    def busy(self) -> float:
        """Fraction of the run the backbone was computing: decode must not starve it."""
        return self.forward_seconds / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        views = "" if self.views == 1 else f" x {self.views} views (vectors)"
        rate = "photos/s" if self.views == 1 else "vectors/s"
        return (f"{self.photos} photos ({self.unique} unique){views}: {self.cached} cached, {self.embedded} embedded, "
                f"{len(self.skipped)} skipped; {self.seconds:.1f}s, {self.photos_per_s:.1f} {rate}, "
                f"backbone busy {self.busy:.0%}")

    def skipped_lines(self, limit: int = 20) -> list[str]:
        """`skipped: <path>: <reason>` for every photo that could not be embedded (the first `limit`, then a count)."""
        lines = [f"skipped: {path}: {reason.removeprefix(str(path) + ': ')}" for path, reason in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"skipped: ... and {len(self.skipped) - limit} more photos (embed.py --report FILE lists all)")
        return lines

    def write(self, path: str | os.PathLike) -> None:
        """A JSON report including every skipped photo and why."""
        d = {k: v for k, v in self.__dict__.items()}
        d.update(photos_per_s=self.photos_per_s, busy=self.busy)
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        Path(path).write_text(json.dumps(d, indent=2))


def embed_catalog(
    catalog: Catalog | Sequence[Path],
    backbone,
    cache_root: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int | None = None,
    dtype: str = "float32",
    progress: bool = True,
    wait_for_lock: float = 0.0,
    engine: Callable[..., None] | None = None,
    tta: TTA | str | None = None,
) -> EmbedReport:
    """Embed every photo of `catalog` (and with `tta` each of its variants) not in the cache yet; say what was done.

    Photos that cannot be decoded are skipped, counted and listed in the report (never silently).
    Args:
        wait_for_lock: seconds to wait for another writer on the same cache; 0 = refuse at once.
        engine: who embeds the missing photos, called as `engine(todo, backbone, cache, batch_size, progress,
            report)` with the writer lock held; None = this process (DataLoader decode workers), or e.g.
            `setenc.photos.ray_engine.RayEngine` for a Ray cluster. Planning and the lock stay here for every engine.
        tta: photo variants (`setenc.photos.tta`); each is one more pass of the engine with the variant in the
            backbone's transform, its vectors keyed `<hash>:<variant id>`, so the plain vectors stay as they are.
    """
    t0 = time.perf_counter()
    tta = TTA.parse(tta)
    paths = catalog.image_paths if isinstance(catalog, Catalog) else list(dict.fromkeys(Path(p) for p in catalog))
    cache = EmbeddingCache(cache_root, backbone.id, backbone.dim, dtype)
    report = EmbedReport(photos=len(paths), views=tta.views)
    hashes = cache.hashes(paths, progress=progress)
    for p, h in zip(paths, hashes):
        if h is None:
            report.skipped.append((str(p), f"{p}: missing or not a readable file"))
    by_hash = {h: p for p, h in zip(paths, hashes) if h is not None}
    report.unique = len(by_hash)
    keys = {h: tta.keys(h) for h in by_hash}  # per photo: its own key, then one per variant
    present = cache.locate(k for ks in keys.values() for k in ks)
    todo = [[(ks[v], by_hash[h]) for h, ks in keys.items() if ks[v] not in present] for v in range(tta.views)]
    if any(todo):  # only a run with something to write takes the writer lock; readers of a warm cache never wait
        try:
            lock = cache.lock().acquire(timeout=wait_for_lock)
        except Timeout:
            raise SetencError(f"{cache.dir}: another embedding run is writing this cache; wait for it to finish") from None
        with lock:
            present = cache.locate(k for view in todo for k, _ in view)  # the other writer may have embedded some
            todo = [[(k, p) for k, p in view if k not in present] for view in todo]
            for view, view_backbone in zip(todo, tta.backbones(backbone)):
                failed = {p for p, _ in report.skipped}  # a photo that did not decode is reported once, not per view
                view = [(k, p) for k, p in view if str(p) not in failed]
                if view and engine is not None:
                    engine(view, view_backbone, cache, batch_size, progress, report)
                elif view:
                    _run(view, view_backbone, cache, batch_size, num_workers, progress, report)
    report.cached = report.unique * tta.views - sum(len(view) for view in todo)
    report.seconds = time.perf_counter() - t0
    return report


def _run(todo, backbone, cache, batch_size, num_workers, progress, report) -> None:
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if len(todo) > 4 * batch_size else 0
    loader = DataLoader(
        _PhotoDataset([p for _, p in todo], backbone.transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
        # a private generator: worker seeds drawn from the global RNG would make a seeded training run's
        # weight init depend on whether the cache was already warm
        generator=torch.Generator(),
    )
    writer = cache.writer()
    bar = tqdm(total=len(todo), desc=f"embedding ({backbone.name})", unit="photo", disable=not progress)
    try:
        for idx, x, bad in loader:
            for i, err in bad:
                report.skipped.append((str(todo[i][1]), err))
            if x is not None:
                t = time.perf_counter()
                vec = encode_batch(backbone, x)
                report.forward_seconds += time.perf_counter() - t
                write_vectors(writer, [todo[i] for i in idx], vec, report)
            bar.update(len(idx) + len(bad))
    finally:
        writer.close()
        bar.close()


def article_embeddings(catalog: Catalog, cache: EmbeddingCache,
                       tta: TTA | str | None = None) -> tuple[list[np.ndarray], Catalog, list[str]]:
    """Per-article photo vectors from the cache: `(n_i, D)`, or `(n_i * views, D)` with a TTA in `elements` mode.

    Photos missing from the cache (skipped when embedding; with a TTA, lacking any of their views) are dropped;
    an article left with no photo is dropped too and its id returned in the third element, so callers can report it.
    Returns: (sets, the catalog of kept articles, dropped article ids).
    """
    tta = TTA.parse(tta)
    paths = catalog.image_paths
    keys = {p: tta.keys(h) for p, h in zip(paths, cache.hashes(paths)) if h is not None}
    where = cache.locate(k for ks in keys.values() for k in ks)
    sets, kept, dropped = [], [], []
    for art in catalog.articles:
        ks = [k for p in art.images if all(k in where for k in keys.get(p, [None])) for k in keys[p]]
        if not ks:
            dropped.append(art.id)
            continue
        sets.append(tta.combine(cache.get(ks)))  # photo by photo, each photo's views in turn
        kept.append(art)
    return sets, catalog.with_articles(kept), dropped


def photo_sets(catalog: Catalog, backbone, cache_root: str | os.PathLike, progress: bool = True,
               wait_for_lock: float = 0.0,
               tta: TTA | str | None = None) -> tuple[list[np.ndarray], Catalog, list[str], EmbedReport]:
    """Catalog -> per-article `(n_i, D)` photo vectors, embedding the photos the cache lacks first.

    Returns (sets, the catalog of kept articles, ids of articles left without any embeddable photo, the embedding
    report naming every skipped photo). Every caller that needs a catalog's vectors goes through here.
    `tta` (`setenc.photos.tta`): each photo's vector is the normalised mean of its views, or (`elements`) each
    view is a set element of its own.
    """
    report = embed_catalog(catalog, backbone, cache_root, progress=progress, wait_for_lock=wait_for_lock, tta=tta)
    sets, kept, dropped = article_embeddings(catalog, EmbeddingCache(cache_root, backbone.id, backbone.dim), tta)
    return sets, kept, dropped, report
