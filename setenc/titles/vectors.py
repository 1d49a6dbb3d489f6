"""Title vectors through the embedding cache: each distinct title is encoded once per text encoder.

The photo cache's store (`photos.cache.EmbeddingCache`: memory-mapped shards behind SQLite, crash-safe appends,
one writer at a time) holds title vectors too: the "backbone" is `text-<encoder id>` and the key the hash of the
title's UTF-8 bytes instead of a file's bytes. An encoder's id names its weights or fitted state, so a changed
model or vocabulary never reuses stale vectors. Empty and missing titles are zero vectors and are not stored.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np
from filelock import Timeout

from setenc.plumbing.errors import SetencError
from setenc.photos.cache import EmbeddingCache
from setenc.titles.encoders import TextEncoder


def title_key(title: str) -> str:
    """Cache key of a title: identical text shares one vector whichever article carries it."""
    return hashlib.blake2b(title.encode("utf-8"), digest_size=16).hexdigest()


def title_cache(encoder: TextEncoder, cache_root: str | os.PathLike) -> EmbeddingCache:
    """The cache of this encoder's title vectors, `<cache_root>/text-<encoder id>/`."""
    return EmbeddingCache(cache_root, f"text-{encoder.id}", encoder.dim)


def title_vectors(titles: Sequence[str | None], encoder: TextEncoder, cache_root: str | os.PathLike | None = None,
                  wait_for_lock: float = 600.0) -> np.ndarray:
    """`(len(titles), dim)` unit vectors (zero rows for empty / missing titles), encoding only what is not cached.

    Args:
        cache_root: the embedding-cache root (default `$SETENC_CACHE/embeddings`, beside the photo vectors).
        wait_for_lock: seconds to wait for another process writing this encoder's cache.
    """
    if cache_root is None:
        from setenc.plumbing.paths import cache_dir

        cache_root = cache_dir("embeddings")
    text = ["" if t is None else str(t) for t in titles]
    rows = [i for i, t in enumerate(text) if t.strip()]
    out = np.zeros((len(text), encoder.dim), np.float32)
    if not rows:
        return out
    cache = title_cache(encoder, cache_root)
    keys = [title_key(text[i]) for i in rows]
    found = cache.locate(keys)  # once: a lookup per title was quadratic (10 min for fashion44k's 7,583 titles)
    missing = {k: text[i] for k, i in zip(keys, rows) if k not in found}
    if missing:
        try:
            with cache.lock().acquire(timeout=wait_for_lock):
                writer = cache.writer()
                try:
                    todo = list(missing)
                    for s in range(0, len(todo), 4096):  # a killed run keeps every finished chunk
                        part = todo[s : s + 4096]
                        writer.add(part, encoder.encode([missing[k] for k in part]))
                finally:
                    writer.close()
        except Timeout:
            raise SetencError(f"{cache.dir}: another process is writing these title vectors; wait for it or use "
                              "another cache root") from None
    out[rows] = cache.get(keys)
    return out
