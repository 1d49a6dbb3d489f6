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
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from setenc.plumbing.errors import SetencError

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
