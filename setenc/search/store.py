"""The export folder on disk: what it holds, the crash-safe writer, the checked reader, the photo-vector table.

```
index.faiss        FAISS index over the article vectors; inner product = cosine (every vector is unit-length)
ids.json           row -> article id
vectors.npy        the article vectors (float32 or float16): `append` and other index types need no re-encoding
photos.npy         every article's photo vectors (P, D), article after article, in the export's dtype
photo_offsets.npy  (N + 1,) int64: article row r owns photos[offsets[r] : offsets[r + 1]]
metadata.json      the articles' filterable metadata, one column per key, row-aligned (`setenc.search.filters`)
manifest.json      backbone, head, title fusion, checkpoint path + sha256, dims, count, index type + search
                   parameters, dropped articles, catalog, created, setenc version, photos {count, dim},
                   metadata keys, sha256 of each file
```
The metadata is copied at export time so `where=` filters work without the catalogue; exports written before it
existed (no metadata.json) still load and search, and filtering on them says to re-export.
Why the photo vectors are stored: re-ranking and multi-vector search score the candidates' photos, and
re-embedding them per query would run the backbone on every candidate. One flat (P, D) array plus offsets rather
than a padded (N, max_n, D) block: nothing is padded on disk, it memory-maps, and an article's photos are one
slice. They take the export's dtype (float16 halves them as it halves vectors.npy). Exports written before they
existed (no photo files, `photos` null) still load and search by set vector; re-ranking and multi-vector search on
them say to re-export.

A write goes into a temp folder beside the export, which is then swapped in (old away, new in, old deleted) under
a file lock, so a crash at any moment leaves the previous export intact; the next reader or writer puts back one a
crash left renamed away.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import faiss
import numpy as np
from filelock import FileLock

from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.search.filters import Metadata
from setenc.plumbing.paths import file_sha256

FORMAT = "setenc-index-v1"
FILES = ("index.faiss", "ids.json", "vectors.npy")  # every export
PHOTO_FILES = ("photos.npy", "photo_offsets.npy")  # exports that can re-rank and search by photo
METADATA = "metadata.json"  # exports that can filter by metadata
MANIFEST = "manifest.json"
REEXPORT = "re-export with scripts/export.py"


class PhotoStore:
    """Per-article photo vectors: `photos (P, D)` (memory-mapped when read) and `offsets (N + 1,)`."""

    def __init__(self, photos: np.ndarray, offsets: np.ndarray):
        self.photos, self.offsets = photos, np.asarray(offsets, np.int64)

    @classmethod
    def from_sets(cls, sets: Sequence[np.ndarray], dim: int, dtype: str = "float32") -> "PhotoStore":
        """From per-article `(n_i, D)` arrays (rounded to `dtype`, as stored)."""
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets], dtype=np.int64)])
        photos = np.concatenate(sets).astype(dtype) if len(sets) else np.zeros((0, dim), dtype)
        return cls(photos, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.photos.shape[1])

    def set(self, row: int) -> np.ndarray:
        """(n, D) float32 photo vectors of article row `row`."""
        return np.array(self.photos[self.offsets[row] : self.offsets[row + 1]], np.float32)  # a copy, never the map

    def sets(self, rows: Sequence[int]) -> list[np.ndarray]:
        return [self.set(int(r)) for r in rows]

    def owners(self) -> np.ndarray:
        """(P,) int64: the article row of every photo."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def select(self, rows: Sequence[int]) -> "PhotoStore":
        """The articles `rows`, in that order, as a new in-memory store."""
        return PhotoStore.from_sets(self.sets(rows), self.dim, self.photos.dtype)

    def concat(self, other: "PhotoStore") -> "PhotoStore":
        return PhotoStore(np.concatenate([self.photos, other.photos.astype(self.photos.dtype)]),
                          np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]]))


@dataclass
class Export:
    """An export's contents, as read or about to be written."""

    index: faiss.Index
    ids: list[str]
    manifest: dict
    vectors: np.ndarray  # (N, E)
    photos: PhotoStore | None = None
    metadata: Metadata | None = None


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold the export's writer lock; first put back an export a crash left renamed away, drop half-written ones."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        recover(out)
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a killed export's half-written folder
            shutil.rmtree(stale, ignore_errors=True)
        yield


def write_export(out: Path, export: Export) -> dict:
    """Write every file into a temp folder beside `out`, then swap it in: old away, new in, old deleted.

    Fills the manifest's `photos` and `files` (sha256 of each file) and returns it.
    """
    manifest, photos = export.manifest, export.photos
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        faiss.write_index(export.index, str(tmp / "index.faiss"))
        (tmp / "ids.json").write_text(json.dumps(export.ids))
        np.save(tmp / "vectors.npy", export.vectors)
        names = FILES
        if photos is not None:
            np.save(tmp / "photos.npy", photos.photos.astype(export.vectors.dtype))
            np.save(tmp / "photo_offsets.npy", photos.offsets)
            names = (*FILES, *PHOTO_FILES)
        if export.metadata is not None:
            (tmp / METADATA).write_text(export.metadata.to_json())
            names = (*names, METADATA)
        manifest["metadata"] = None if export.metadata is None else {"keys": export.metadata.keys}
        manifest["photos"] = None if photos is None else {"count": int(photos.offsets[-1]), "dim": photos.dim}
        manifest["files"] = {name: file_sha256(tmp / name) for name in names}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for name in (*names, MANIFEST):
            _fsync(tmp / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    backup = out.parent / f".{out.name}.old"
    if out.exists():
        shutil.rmtree(backup, ignore_errors=True)  # left by a crash after a finished swap
        os.rename(out, backup)
    os.rename(tmp, out)
    shutil.rmtree(backup, ignore_errors=True)
    return manifest


def read_export(path: Path, verify: bool = True) -> Export:
    """Open an export folder; `verify` checks the sha256 of every file the manifest lists."""
    recover(path)
    for name in (MANIFEST, *FILES):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing from the index export; {REEXPORT}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / MANIFEST}: not valid JSON ({e.msg}); {REEXPORT}") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path / MANIFEST}: format {manifest.get('format')!r} is not {FORMAT!r}; "
                              "re-export with this setenc version")
    has_photos = all(name in manifest["files"] for name in PHOTO_FILES)
    has_metadata = METADATA in manifest["files"]
    for name in (*FILES, *(PHOTO_FILES if has_photos else ()), *((METADATA,) if has_metadata else ())):
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name}: missing from the index export; {REEXPORT}")
        if verify and file_sha256(path / name) != manifest["files"][name]:
            raise CheckpointError(f"{path / name}: sha256 differs from the manifest (damaged or changed "
                                  f"after export); {REEXPORT}")
    ids = json.loads((path / "ids.json").read_text())
    index = faiss.read_index(str(path / "index.faiss"))
    vectors = np.load(path / "vectors.npy", mmap_mode="r")
    photos = None
    if has_photos:
        photos = PhotoStore(np.load(path / "photos.npy", mmap_mode="r"), np.load(path / "photo_offsets.npy"))
    metadata = Metadata.from_json((path / METADATA).read_text()) if has_metadata else None
    if not (len(ids) == index.ntotal == len(vectors) == manifest["count"] == (len(photos) if photos else len(ids))
            and (not metadata or not metadata.columns or len(metadata) == len(ids))):
        raise CheckpointError(f"{path}: ids ({len(ids)}), index ({index.ntotal}), vectors ({len(vectors)}), "
                              f"photo offsets and metadata disagree; {REEXPORT}")
    return Export(index, ids, manifest, vectors, photos, metadata)


def require_photos(export_photos: PhotoStore | None, what: str) -> PhotoStore:
    """The export's photo vectors, or a one-line error saying why `what` needs a re-export."""
    if export_photos is None:
        raise SetencError(f"{what} needs the articles' photo vectors, which this export does not hold (written "
                          f"before exports stored photos.npy, or appended to such an export); {REEXPORT}")
    return export_photos


def recover(out: Path) -> None:
    """Put back an export a crash left renamed away between the two renames of a swap."""
    backup = out.parent / f".{out.name}.old"
    if backup.is_dir() and not out.exists() and (backup / MANIFEST).is_file():
        os.rename(backup, out)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
