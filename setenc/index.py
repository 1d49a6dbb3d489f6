"""FAISS export of one vector per article, and search over it: `export_index(...)`, `SetIndex.load(dir).search(q)`.

An export is one folder, written into a temp folder beside it and swapped in, so a crash at any moment leaves
the previous export intact and readable:
```
index.faiss     FAISS index over the article vectors; inner product = cosine (every vector is unit-length)
ids.json        row -> article id
vectors.npy     the article vectors (float32 or float16): `append` and other index types need no re-encoding
manifest.json   backbone, head, checkpoint path + sha256, dims, count, index type + search parameters,
                dropped articles, catalog, created, setenc version, sha256 of each file above
```
Photo queries need the encoder the export was made with. `SetIndex` rebuilds it from the manifest by itself when
it can: a parameter-free head from its config, a trained head from the recorded checkpoint path if that file still
has the recorded sha256. Otherwise pass `encoder=` (or `--checkpoint`); vector queries never need one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import torch
from filelock import FileLock
from PIL import Image

from setenc.catalogs import Catalog, load_catalog
from setenc.photos import photo_sets
from setenc.errors import CheckpointError, SetencError
from setenc import __version__
from setenc.encoder import SetEncoder
from setenc.paths import file_sha256

FORMAT = "setenc-index-v1"
FILES = ("index.faiss", "ids.json", "vectors.npy")
MANIFEST = "manifest.json"
REEXPORT = "re-export with scripts/export.py"
HNSW_M = 32  # graph degree of the "hnsw" index
HNSW_EF_SEARCH = 64  # candidates per query: top-1 = exact top-1 for every query at 10k and 100k (bench_search.md)
IVF_TRAIN_PER_LIST = 40  # k-means training points per inverted list (FAISS wants >= 39; more costs time)
ADD_CHUNK = 65536  # rows converted to float32 and added at once


# -- building ----------------------------------------------------------------------------------------
def ivf_lists(n: int) -> tuple[int, int]:
    """(nlist, nprobe) for n vectors: nlist ~ 4·sqrt(n), at most n/39 so k-means has data; nprobe ~ sqrt(nlist),
    2-4x what reached exact top-1s on every query at 10k and 100k (docs/bench_search.md)."""
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
    return nlist, min(nlist, math.ceil(math.sqrt(nlist)))


def build_index(vectors: np.ndarray, kind: str = "flat", seed: int = 0) -> tuple[faiss.Index, dict]:
    """An inner-product FAISS index over `vectors (N, E)`, trained when needed, plus its search parameters.

    Args:
        vectors: unit-length article vectors, any float dtype (float16 / memory-mapped: added in chunks, so
            millions of vectors never need a second full float32 copy).
        kind: "flat" (exact), "ivf" (IVF-Flat), "hnsw" (HNSW-Flat, M=32) or any FAISS factory string.
        seed: for the training subsample.

    Returns:
        (index, params) where params (e.g. `{"nprobe": 16}`) are applied with `set_search_params`.
    """
    n, d = vectors.shape  # (N, E)
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist, params["nprobe"] = ivf_lists(n)
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        params["efSearch"] = HNSW_EF_SEARCH
    else:
        try:
            index = faiss.index_factory(d, kind, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise SetencError(f"index {kind!r} is neither flat / ivf / hnsw nor a FAISS factory string FAISS accepts "
                              f"({str(e).strip().splitlines()[-1][:200]})") from None
    if not index.is_trained:
        try:
            nlist = faiss.extract_index_ivf(index).nlist
        except RuntimeError:  # not an IVF index: PQ codebooks, PCA, ...
            nlist = 1
        take = min(n, max(IVF_TRAIN_PER_LIST * nlist, 10_000))
        rows = np.sort(np.random.default_rng(seed).choice(n, take, replace=False)) if take < n else slice(None)
        try:
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
        except RuntimeError as e:
            raise SetencError(f"index {kind!r} cannot be trained on {n} vectors ({str(e).strip()[:200]}); "
                              "use a smaller index or 'flat'") from None
    set_search_params(index, params)
    for start in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))
    return index, params


def set_search_params(index: faiss.Index, params: dict) -> None:
    """Apply search parameters (`nprobe`, `efSearch`, ...) by FAISS's own names, wrappers included."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


# -- exporting ---------------------------------------------------------------------------------------
def export_index(
    encoder: SetEncoder,
    catalog: Catalog | str | os.PathLike,
    cache_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    index: str | None = None,
    dtype: str | None = None,
    append: bool = False,
    progress: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
) -> dict:
    """Encode every article of `catalog` and write the export folder `out_dir` atomically.

    Args:
        encoder: the set encoder (its backbone embeds the photos missing from the cache).
        catalog: a catalog, or the path of its manifest (then recorded, so `search.py` can show titles and photos).
        cache_root: the photo-embedding cache root.
        index: "flat" (default), "ivf", "hnsw" or a FAISS factory string; with `append`, the export's own.
        dtype: "float32" (default) or "float16" for vectors.npy; the index holds the same (rounded) values.
        append: add only the articles not in the export yet; existing rows, their order and the index stay
            (a trained index keeps its training: re-export once the catalogue has grown several-fold).
        checkpoint_path: the encoder's checkpoint file, recorded so photo queries can rebuild the encoder;
            default: `encoder.checkpoint_path` when set.

    Returns:
        the manifest written. Articles with no embeddable photo are listed in `manifest["dropped"]`.
    """
    out = Path(out_dir)
    catalog_path = None
    if not isinstance(catalog, Catalog):
        catalog_path = str(Path(catalog).resolve())
        catalog = load_catalog(catalog)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        _recover(out)
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # a killed export's half-written folder
            shutil.rmtree(stale, ignore_errors=True)
        old = SetIndex.load(out, encoder) if append and out.exists() else None
        kind = _agree("index type", index, old and old.manifest["index"]["type"], "flat")
        dtype = _agree("dtype", dtype, old and old.manifest["dtype"], "float32")
        if dtype not in ("float32", "float16"):
            raise SetencError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
        known = set(old.ids) if old else set()
        todo = catalog.subset([i for i in catalog.ids if i not in known])
        vecs, ids, dropped, skipped = _encode(encoder, todo, cache_root, dtype, progress)
        if old is None:
            if not ids:
                raise SetencError(f"catalog {catalog.name}: no article has an embeddable photo "
                                  f"({len(dropped)} dropped); nothing to export")
            faiss_index, params = build_index(vecs, kind)
        else:
            faiss_index, params = old.index, old.manifest["index"]["params"]
            if len(vecs):
                faiss_index.add(vecs)
            vecs = np.concatenate([np.asarray(old.vectors, np.float32), vecs])
            ids = old.ids + ids
            dropped = sorted((set(old.manifest["dropped"]) - set(ids)) | set(dropped))
        manifest = _manifest(encoder, len(ids), vecs.shape[1], kind, params, dtype, dropped,
                             checkpoint_path or getattr(encoder, "checkpoint_path", None),
                             catalog_path or (old and old.manifest.get("catalog")), catalog.name)
        _write(out, faiss_index, ids, vecs.astype(dtype), manifest)
    return {**manifest, "skipped_photos": skipped}


def _agree(what: str, asked: str | None, existing: str | None, default: str) -> str:
    """The setting to use: the existing export's when appending (a different explicit one is refused)."""
    if existing is None:
        return asked or default
    if asked is not None and asked != existing:
        raise SetencError(f"cannot append with {what} {asked!r} to an export built with {existing!r}; "
                          f"drop the option or re-export without append")
    return existing


def _encode(encoder: SetEncoder, catalog: Catalog, cache_root, dtype: str,
            progress: bool) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """(N, E) float32 article vectors (rounded through `dtype`), their ids, dropped ids, skipped-photo lines."""
    empty = np.zeros((0, encoder.head.out_dim), np.float32)
    if len(catalog) == 0:
        return empty, [], [], []
    sets, kept, dropped, report = photo_sets(catalog, encoder.backbone, cache_root, progress=progress)
    skipped = report.skipped_lines()
    if not sets:
        return empty, [], dropped, skipped
    vecs = encoder.encode_sets(sets).astype(dtype).astype(np.float32)  # (N, E) the values vectors.npy holds
    bad = ~np.isfinite(vecs).all(1)
    if bad.any():
        raise SetencError(f"article {kept.ids[int(np.argmax(bad))]!r}: its vector holds NaN/inf; "
                          "check its photos and the checkpoint")
    return vecs, kept.ids, dropped, skipped


def _manifest(encoder: SetEncoder, count: int, dim: int, kind: str, params: dict, dtype: str, dropped: list[str],
              checkpoint_path, catalog_path: str | None, catalog_name: str) -> dict:
    sha = getattr(encoder, "checkpoint_sha256", None)
    return {
        "format": FORMAT,
        "setenc_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backbone": dict(encoder.backbone_spec),
        "photo_dim": encoder.dim,
        "head": {"name": encoder.head.name, "config": encoder.head.config},
        "checkpoint": {"path": str(Path(checkpoint_path).resolve()) if checkpoint_path and sha else None,
                       "sha256": sha},
        "dim": dim,
        "count": count,
        "index": {"type": kind, "params": params},
        "dtype": dtype,
        "catalog": catalog_path,
        "catalog_name": catalog_name,
        "dropped": list(dropped),
    }


def _write(out: Path, index: faiss.Index, ids: list[str], vectors: np.ndarray, manifest: dict) -> None:
    """Write every file into a temp folder beside `out`, then swap it in: old away, new in, old deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))
        (tmp / "ids.json").write_text(json.dumps(ids))
        np.save(tmp / "vectors.npy", vectors)
        manifest["files"] = {name: file_sha256(tmp / name) for name in FILES}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        for name in (*FILES, MANIFEST):
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


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _recover(out: Path) -> None:
    """Put back an export a crash left renamed away between the two renames of a swap."""
    backup = out.parent / f".{out.name}.old"
    if backup.is_dir() and not out.exists() and (backup / MANIFEST).is_file():
        os.rename(backup, out)


# -- searching ---------------------------------------------------------------------------------------
class SetIndex:
    """A loaded export: article vectors in FAISS plus the id map, searchable by photo set or vector.

    Args:
        index: the FAISS index.
        ids: row -> article id.
        manifest: the export's manifest.
        vectors: (N, E) article vectors (memory-mapped).
        encoder: the encoder for photo queries; built from the manifest on first use when None.
    """

    def __init__(self, index: faiss.Index, ids: list[str], manifest: dict, vectors: np.ndarray,
                 encoder: SetEncoder | None = None):
        self.index, self.ids, self.manifest, self.vectors = index, ids, manifest, vectors
        self._encoder = encoder
        self._lookup = np.array([*ids, None], dtype=object)  # row -> id; FAISS's "no hit" row -1 -> None
        set_search_params(index, manifest["index"]["params"])

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: SetEncoder | None = None, verify: bool = True) -> "SetIndex":
        """Open an export; `verify` checks every file's sha256, `encoder` must be the one it was built with."""
        path = Path(path)
        _recover(path)
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
        if verify:
            for name in FILES:
                if file_sha256(path / name) != manifest["files"][name]:
                    raise CheckpointError(f"{path / name}: sha256 differs from the manifest (damaged or changed "
                                          f"after export); {REEXPORT}")
        if encoder is not None:
            check_encoder(manifest, encoder, path)
        ids = json.loads((path / "ids.json").read_text())
        index = faiss.read_index(str(path / "index.faiss"))
        vectors = np.load(path / "vectors.npy", mmap_mode="r")
        if not (len(ids) == index.ntotal == len(vectors) == manifest["count"]):
            raise CheckpointError(f"{path}: ids ({len(ids)}), index ({index.ntotal}) and vectors ({len(vectors)}) "
                                  f"disagree; {REEXPORT}")
        return cls(index, ids, manifest, vectors, encoder)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    def set_params(self, **params) -> None:
        """Trade speed for recall at search time, e.g. `set_params(nprobe=64)` or `set_params(efSearch=256)`."""
        set_search_params(self.index, params)

    @property
    def encoder(self) -> SetEncoder:
        """The encoder for photo queries: the one given, else rebuilt from the manifest."""
        if self._encoder is None:
            self._encoder = encoder_from_manifest(self.manifest)
        return self._encoder

    def vectorize(self, queries: Sequence) -> np.ndarray:
        """Queries -> (Q, E) unit vectors. Each query: an (E,) vector, an (n, D) array of photo vectors,
        or a photo set (paths / PIL images). A 2-D array as a whole is a batch of (Q, E) vectors."""
        if isinstance(queries, (np.ndarray, torch.Tensor)) and np.ndim(queries) == 2:
            return self._unit(np.asarray(queries, np.float32))
        rows = []
        for q in queries:
            array = isinstance(q, (np.ndarray, torch.Tensor))
            if array and np.ndim(q) == 1:
                rows.append(self._unit(np.asarray(q, np.float32)[None])[0])
            elif array and np.ndim(q) == 2:
                rows.append(self.encoder.encode_sets([np.asarray(q, np.float32)])[0])
            elif isinstance(q, (list, tuple)) and all(isinstance(p, (str, os.PathLike, Image.Image)) for p in q):
                rows.append(self.encoder.encode([q])[0])
            else:
                raise SetencError(f"query {len(rows)}: expected an ({self.dim},) vector, an (n, D) array of photo "
                                  f"vectors or a list of photo paths / PIL images, got {type(q).__name__}")
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)

    def _unit(self, x: np.ndarray) -> np.ndarray:
        if x.shape[-1] != self.dim:
            raise SetencError(f"query vectors are {x.shape[-1]}-d, this index holds {self.dim}-d article vectors")
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        if not (np.isfinite(x).all() and (norm > 0).all()):
            raise SetencError("a query vector is zero or holds NaN/inf; it has no direction to search for")
        return x / norm

    def search_batch(self, queries: Sequence, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(ids (Q, k) object, scores (Q, k) float32 cosines), best first; missing hits: id None, score -inf."""
        x = self.vectorize(queries)  # (Q, E)
        scores, rows = self.index.search(x, k)  # (Q, k) each
        return self._lookup[rows], np.where(rows >= 0, scores, -np.inf).astype(np.float32)

    def search(self, query, k: int = 10) -> list[tuple[str, float]]:
        """The k nearest articles of one query (a vector, photo vectors or a photo set) as (id, cosine)."""
        ids, scores = self.search_batch([query], k)
        return [(i, float(s)) for i, s in zip(ids[0], scores[0]) if i is not None]


def check_encoder(manifest: dict, encoder: SetEncoder, where: str | os.PathLike = "index") -> None:
    """Refuse an encoder that is not the one the export was built with: its vectors would not be comparable."""
    spec, head = manifest["backbone"], manifest["head"]
    problems = []
    if encoder.backbone_spec.get("id") != spec.get("id") or encoder.dim != manifest["photo_dim"]:
        problems.append(f"backbone {encoder.backbone_spec.get('id')} ({encoder.dim}-d photos) instead of "
                        f"{spec.get('id')} ({manifest['photo_dim']}-d)")
    if encoder.head.config != head["config"] or encoder.head.out_dim != manifest["dim"]:
        problems.append(f"head {encoder.head.config} instead of {head['config']}")
    sha, want = getattr(encoder, "checkpoint_sha256", None), manifest["checkpoint"]["sha256"]
    if sha and want and sha != want:
        problems.append(f"checkpoint sha256 {sha[:12]}… instead of {want[:12]}…")
    if problems:
        raise CheckpointError(f"{where}: the encoder differs from the one this index was exported with: "
                              f"{'; '.join(problems)}. Use that encoder, or re-export the index with this one")


def encoder_from_manifest(manifest: dict) -> SetEncoder:
    """Rebuild the export's encoder: a parameter-free head from its config, else the recorded checkpoint."""
    from setenc.heads import create_head

    ckpt = manifest["checkpoint"]
    if ckpt["sha256"] is None:
        enc = SetEncoder(create_head(**manifest["head"]["config"]).eval(), manifest["backbone"], manifest["photo_dim"])
        enc.checkpoint_sha256 = None
        return enc
    path = ckpt["path"]
    if path is None or not Path(path).is_file() or file_sha256(path) != ckpt["sha256"]:
        raise CheckpointError(f"photo queries need the checkpoint this index was exported with "
                              f"({path or 'path not recorded'}, sha256 {ckpt['sha256'][:12]}…), which is missing or "
                              "changed; pass encoder=SetEncoder.from_pretrained(...) (scripts: --checkpoint), "
                              "or query by vector")
    return SetEncoder.from_pretrained(path)
