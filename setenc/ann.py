"""FAISS index construction over unit vectors: the index kinds, their training and search-time parameters.

Kept apart from the export folder (`store`) and the search API (`index`): exports, catalogue edits and the
benchmarks all build indexes here, so an index kind means the same thing everywhere.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from setenc.errors import SetencError

HNSW_M = 32  # graph degree of the "hnsw" index
HNSW_EF_SEARCH = 64  # candidates per query: top-1 = exact top-1 for every query at 10k and 100k (bench_search.md)
IVF_TRAIN_PER_LIST = 40  # k-means training points per inverted list (FAISS wants >= 39; more costs time)
ADD_CHUNK = 65536  # rows converted to float32 and added at once


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
    add_rows(index, vectors)
    return index, params


def add_rows(index: faiss.Index, vectors: np.ndarray) -> None:
    """Add `vectors (N, E)` in float32 chunks of ADD_CHUNK rows (no full float32 copy of a float16 memmap)."""
    for start in range(0, len(vectors), ADD_CHUNK):
        index.add(np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32))


def refill(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """A copy of `index` (same kind, same training, same parameters) holding exactly `vectors`, in order.

    Catalogue edits use this instead of FAISS `remove_ids`: row number = position in ids.json only holds when
    the rows are re-added in order (IVF's remove_ids leaves gaps in the labels, HNSW has no removal), and
    re-adding stored vectors needs no re-encoding. A trained index keeps its training, as with `append`.
    """
    fresh = faiss.clone_index(index)
    fresh.reset()
    add_rows(fresh, vectors)
    return fresh


def set_search_params(index: faiss.Index, params: dict) -> None:
    """Apply search parameters (`nprobe`, `efSearch`, ...) by FAISS's own names, wrappers included."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)
