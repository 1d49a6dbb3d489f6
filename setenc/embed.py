"""The photo-embedding cache: every photo is embedded once per backbone, keyed by the file's content hash.

Layout of one cache (`<root>/<backbone id>/`), built for catalogues of millions of photos:
```
meta.json            backbone id, dim, dtype — a cache never mixes backbones
index.sqlite         hash -> (shard, row); path+size+mtime -> hash (so unchanged files are not re-read)
shards/00000.bin     raw float32/float16 rows, read through np.memmap, appended to only
```
Crash safety: a batch's vectors are appended and fsync'ed *before* the index rows naming them are committed
in one SQLite transaction, so a kill at any moment loses at most the batch in flight and never exposes a
half-written vector. One writer at a time (a file lock); readers need no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .catalog import Catalog
from .errors import SetencError
from .images import load_image

SHARD_ROWS = 1 << 20  # rows per shard file before rolling over to the next


def file_hash(path: str | os.PathLike) -> str:
    """Content hash of a photo: identical bytes share one vector whatever the file is called."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_name(backbone_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in backbone_id)


class EmbeddingCache:
    """Vectors of one backbone, addressed by content hash.

    Args:
        root: the cache root; this backbone's cache lives in `root/<backbone id>/`.
        backbone_id: `Backbone.id` — weights and preprocessing, so a changed model never reuses stale vectors.
        dim: vector size.
        dtype: "float32" or "float16" (half the disk; fixed when the cache is created).
    """

    def __init__(self, root: str | os.PathLike, backbone_id: str, dim: int, dtype: str = "float32"):
        self.dir = Path(root) / _safe_name(backbone_id)
        (self.dir / "shards").mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        meta = {"backbone": backbone_id, "dim": int(dim), "dtype": dtype}
        if meta_path.is_file():
            found = json.loads(meta_path.read_text())
            if (found["backbone"], found["dim"]) != (backbone_id, int(dim)):
                raise SetencError(f"{meta_path}: cache belongs to {found['backbone']} ({found['dim']}-d), "
                                  f"not {backbone_id} ({dim}-d); use another cache root")
            meta = found
        else:
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta))
            os.replace(tmp, meta_path)
        self.backbone_id, self.dim, self.dtype = backbone_id, int(dim), np.dtype(meta["dtype"])
        self.db = sqlite3.connect(self.dir / "index.sqlite", timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, shard INT, row INT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INT, mtime INT, hash TEXT)")
        self.db.commit()
        self._maps: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def lock(self) -> FileLock:
        """The writer lock; a second writer on the same cache is refused instead of corrupting it."""
        return FileLock(str(self.dir / "write.lock"))

    # -- hashing with a stat cache -------------------------------------------------------------------
    def hashes(self, paths: Sequence[Path], progress: bool = False) -> list[str | None]:
        """Content hash of each path (None for a file that cannot be read); unchanged files are not re-read."""
        known = {}
        for chunk in _chunks([str(p) for p in paths], 900):
            q = f"SELECT path, size, mtime, hash FROM files WHERE path IN ({','.join('?' * len(chunk))})"
            known.update({r[0]: r[1:] for r in self.db.execute(q, chunk)})
        out, fresh = [], []
        for p in tqdm(paths, desc="hashing", unit="photo", disable=not progress, leave=False):
            try:
                st = os.stat(p)
            except OSError:
                out.append(None)
                continue
            hit = known.get(str(p))
            if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
                out.append(hit[2])
                continue
            try:
                h = file_hash(p)
            except OSError:  # a directory, no permission, vanished meanwhile
                out.append(None)
                continue
            out.append(h)
            fresh.append((str(p), st.st_size, st.st_mtime_ns, h))
        if fresh:
            self.db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?)", fresh)
            self.db.commit()
        return out

    # -- lookup --------------------------------------------------------------------------------------
    def locate(self, hashes: Iterable[str]) -> dict[str, tuple[int, int]]:
        """hash -> (shard, row) for the hashes present."""
        found: dict[str, tuple[int, int]] = {}
        for chunk in _chunks(list(dict.fromkeys(hashes)), 900):
            q = f"SELECT hash, shard, row FROM vectors WHERE hash IN ({','.join('?' * len(chunk))})"
            found.update({h: (s, r) for h, s, r in self.db.execute(q, chunk)})
        return found

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 vectors; a missing or non-finite vector is an error naming the hash."""
        where = self.locate(hashes)
        out = np.empty((len(hashes), self.dim), np.float32)
        for i, h in enumerate(hashes):
            if h not in where:
                raise KeyError(f"photo {h} is not in the embedding cache {self.dir}; run scripts/embed.py first")
            shard, row = where[h]
            out[i] = self._map(shard)[row]
        bad = ~np.isfinite(out).all(1)
        if bad.any():
            h = hashes[int(np.argmax(bad))]
            raise SetencError(f"{self.dir}: cached vector of photo {h} holds NaN/inf; delete the cache folder to rebuild")
        return out

    def _map(self, shard: int) -> np.memmap:
        m = self._maps.get(shard)
        path = self._shard_path(shard)
        rows = path.stat().st_size // (self.dim * self.dtype.itemsize)
        if m is None or len(m) < rows:  # (re)open when the shard has grown since it was mapped
            m = np.memmap(path, dtype=self.dtype, mode="r", shape=(rows, self.dim))
            self._maps[shard] = m
        return m

    def _shard_path(self, shard: int) -> Path:
        return self.dir / "shards" / f"{shard:05d}.bin"

    # -- writing -------------------------------------------------------------------------------------
    def writer(self) -> "_ShardWriter":
        return _ShardWriter(self)


class _ShardWriter:
    """Appends vectors to the newest shard (a fresh one each run), then commits their index rows."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        shards = sorted(int(p.stem) for p in (cache.dir / "shards").glob("*.bin"))
        self.shard = (shards[-1] + 1) if shards else 0
        self.rows = 0
        self.file = None

    def add(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        if self.file is None or self.rows >= SHARD_ROWS:
            self.close()
            if self.rows >= SHARD_ROWS:
                self.shard, self.rows = self.shard + 1, 0
            self.file = open(self.cache._shard_path(self.shard), "ab")
        data = np.ascontiguousarray(vectors, dtype=self.cache.dtype)
        self.file.write(data.tobytes())
        self.file.flush()
        os.fsync(self.file.fileno())  # vectors durable before the index names them
        rows = [(h, self.shard, self.rows + i) for i, h in enumerate(hashes)]
        self.cache.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?)", rows)
        self.cache.db.commit()
        self.rows += len(hashes)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


class _PhotoDataset(Dataset):
    """Decodes and preprocesses photos in worker processes; a bad photo becomes an error string, not a crash."""

    def __init__(self, paths: Sequence[Path], transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, self.transform(load_image(self.paths[i])), None
        except SetencError as e:
            return i, None, str(e)
        except Exception as e:  # noqa: BLE001 — an unexpected decoder failure must not kill a long run
            return i, None, f"{self.paths[i]}: cannot be decoded ({type(e).__name__}: {e})"


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
    cached: int = 0
    embedded: int = 0
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
        return (f"{self.photos} photos ({self.unique} unique): {self.cached} cached, {self.embedded} embedded, "
                f"{len(self.skipped)} skipped; {self.seconds:.1f}s, {self.photos_per_s:.1f} photos/s, "
                f"backbone busy {self.busy:.0%}")

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
) -> EmbedReport:
    """Embed every photo of `catalog` not in the cache yet; return what was done.

    Photos that cannot be decoded are skipped, counted and listed in the report (never silently).
    Args:
        wait_for_lock: seconds to wait for another writer on the same cache; 0 = refuse at once.
    """
    t0 = time.perf_counter()
    paths = catalog.image_paths if isinstance(catalog, Catalog) else list(dict.fromkeys(Path(p) for p in catalog))
    cache = EmbeddingCache(cache_root, backbone.id, backbone.dim, dtype)
    report = EmbedReport(photos=len(paths))
    hashes = cache.hashes(paths, progress=progress)
    for p, h in zip(paths, hashes):
        if h is None:
            report.skipped.append((str(p), f"{p}: missing or not a readable file"))
    by_hash = {h: p for p, h in zip(paths, hashes) if h is not None}
    report.unique = len(by_hash)
    present = cache.locate(by_hash)
    todo = [(h, p) for h, p in by_hash.items() if h not in present]
    if todo:  # only a run with something to write takes the writer lock; readers of a warm cache never wait
        try:
            lock = cache.lock().acquire(timeout=wait_for_lock)
        except Timeout:
            raise SetencError(f"{cache.dir}: another embedding run is writing this cache; wait for it to finish") from None
        with lock:
            present = cache.locate(h for h, _ in todo)  # the other writer may have embedded some meanwhile
            todo = [(h, p) for h, p in todo if h not in present]
            if todo:
                _run(todo, backbone, cache, batch_size, num_workers, progress, report)
    report.cached = report.unique - len(todo)
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
                vec = backbone.encode(x).float().cpu().numpy()
                report.forward_seconds += time.perf_counter() - t
                ok = np.isfinite(vec).all(1)
                for i in np.flatnonzero(~ok):
                    report.skipped.append((str(todo[idx[i]][1]), "backbone returned NaN/inf for this photo"))
                writer.add([todo[idx[i]][0] for i in np.flatnonzero(ok)], vec[ok])
                report.embedded += int(ok.sum())
            bar.update(len(idx) + len(bad))
    finally:
        writer.close()
        bar.close()


def article_embeddings(catalog: Catalog, cache: EmbeddingCache) -> tuple[list[np.ndarray], Catalog, list[str]]:
    """Per-article (n_i, D) photo vectors from the cache.

    Photos missing from the cache (skipped when embedding) are dropped; an article left with no photo is
    dropped too and its id returned in the third element, so callers can report it.
    Returns: (sets, the catalog of kept articles, dropped article ids).
    """
    paths = catalog.image_paths
    hashes = dict(zip(paths, cache.hashes(paths)))
    where = cache.locate(h for h in hashes.values() if h is not None)
    sets, kept, dropped = [], [], []
    for art in catalog.articles:
        hs = [hashes[p] for p in art.images if hashes[p] in where]
        if not hs:
            dropped.append(art.id)
            continue
        sets.append(cache.get(hs))
        kept.append(art)
    return sets, catalog.with_articles(kept), dropped
