"""FAISS index construction over unit vectors: the index kinds, their training and search-time parameters.

Kept apart from the export folder (`store`) and the search API (`index`): exports, catalogue edits and the
benchmarks all build indexes here, so an index kind means the same thing everywhere.
"""

from __future__ import annotations

import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import faiss
import numpy as np

from setenc.plumbing.errors import SetencError
from setenc.search.filters import RowSelector

HNSW_M = 32  # graph degree of the "hnsw" index
HNSW_EF_SEARCH = 64  # candidates per query: exact top-1 on 99.6% of queries at 10k; on galleries full of near-
# duplicate listings HNSW loses top-1s at 100k+ whatever efSearch (0.82 at 100k, 0.52 at 1M: bench_search.md): ivf there
IVF_TRAIN_PER_LIST = 40  # k-means training points per inverted list (FAISS wants >= 39; more costs time)
ADD_CHUNK = 65536  # rows converted to float32 and added at once
PQ_SUB_DIM = 16  # dimensions per 8-bit PQ sub-quantizer of "ivfpq": 1280-d vectors -> 80-byte codes
HNSW_EXACT_SHARE = 0.05  # "hnsw" filters keeping at most this share of the rows scan them exactly (filtered_search)
PQ_REFINE = 10  # "ivfpq" hits re-scored exactly per hit wanted: the codes find the neighbourhood, the stored
# vectors (memory-mapped vectors.npy, never loaded whole) order it (docs/bench_ivfpq.md)


def ivf_lists(n: int) -> tuple[int, int]:
    """(nlist, nprobe) for n vectors: nlist ~ 4·sqrt(n), at most n/39 so k-means has data; nprobe ~ sqrt(nlist),
    2-4x what reached exact top-1s on every query at 10k and 100k (docs/bench_search.md)."""
    nlist = max(1, min(round(4 * math.sqrt(n)), n // 39))
    return nlist, min(nlist, math.ceil(math.sqrt(nlist)))


def pq_codes(d: int) -> int:
    """Sub-quantizers of the "ivfpq" kind for d-dim vectors: the most that divide d with >= PQ_SUB_DIM dims each."""
    return max(m for m in range(1, max(1, d // PQ_SUB_DIM) + 1) if d % m == 0)


def build_index(vectors: np.ndarray, kind: str = "flat", seed: int = 0, shards: int = 1,
                workers: int | None = None) -> tuple[faiss.Index, dict]:
    """An inner-product FAISS index over `vectors (N, E)`, trained when needed, plus its search parameters.

    Args:
        vectors: unit-length article vectors, any float dtype (float16 / memory-mapped: added in chunks, so
            millions of vectors never need a second full float32 copy).
        kind: "flat" (exact), "ivf" (IVF-Flat), "ivfpq" (IVF + 8-bit product quantisation, `pq_codes(E)` bytes
            an article), "hnsw" (HNSW-Flat, M=32) or any FAISS factory string.
        seed: for the training subsample.
        shards: > 1 adds the vectors in that many parallel shards (`add_sharded`; IVF kinds only).
        workers: processes of a sharded build (default: one per core, at most `shards`).

    Returns:
        (index, params) where params (e.g. `{"nprobe": 16}`) are applied with `set_search_params`.
    """
    index, params = trained_index(vectors, kind, seed)
    if shards > 1:
        add_sharded(index, vectors, shards, workers, kind)
    else:
        add_rows(index, vectors)
    return index, params


def trained_index(vectors: np.ndarray, kind: str = "flat", seed: int = 0) -> tuple[faiss.Index, dict]:
    """The empty index of `kind` for `vectors`, its quantisers trained on a sample, and its search parameters."""
    n, d = vectors.shape  # (N, E)
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind in ("ivf", "ivfpq"):
        nlist, params["nprobe"] = ivf_lists(n)
        if kind == "ivfpq" and n < 256:
            raise SetencError(f"index 'ivfpq' needs at least 256 articles to train its 8-bit codebooks, got {n}; "
                              "use 'flat' or 'ivf'")
        codes = "Flat" if kind == "ivf" else f"PQ{pq_codes(d)}"
        index = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
        if kind == "ivfpq":  # FAISS's default reorders PQ centroids for Hamming pre-filtering, which no search
            index.do_polysemous_training = False  # here uses; it made training 140x slower (67 s vs 0.5 s, 1k rows)
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
    return index, params


def add_rows(index: faiss.Index, vectors: np.ndarray, first_id: int | None = None) -> None:
    """Add `vectors (N, E)` in float32 chunks of ADD_CHUNK rows (no full float32 copy of a float16 memmap);
    with `first_id`, under the explicit ids first_id, first_id + 1, ... (a shard of a larger index)."""
    for start in range(0, len(vectors), ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + ADD_CHUNK], dtype=np.float32)
        if first_id is None:
            index.add(chunk)
        else:
            index.add_with_ids(chunk, np.arange(first_id + start, first_id + start + len(chunk), dtype=np.int64))


def add_sharded(index: faiss.Index, vectors: np.ndarray, shards: int, workers: int | None = None,
                kind: str = "") -> None:
    """Add `vectors` to the trained, empty IVF `index` in `shards` row ranges encoded by parallel processes.

    The FAISS recipe for indexes built on many machines (faiss/contrib/ondisk.py): every shard is a copy of the
    trained index holding its rows under their row numbers; the shards' inverted lists are then appended to
    `index` in row order, so the result is the index a single build makes, list for list (tested). Workers read
    their rows from a memory-mapped .npy (the caller's own file when `vectors` is one, else a temporary copy), so
    no process holds more than its shard's codes.
    """
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        raise SetencError(f"a sharded build needs an IVF index (ivf, ivfpq or an IVF factory string); "
                          f"{kind or type(index).__name__!r} is built in one piece (shards=1)") from None
    if index.ntotal:
        raise SetencError("a sharded build starts from an empty trained index")
    n = len(vectors)
    bounds = np.linspace(0, n, min(shards, max(1, n)) + 1).astype(int)
    workers = max(1, min(workers or os.cpu_count() or 1, len(bounds) - 1))
    with tempfile.TemporaryDirectory(prefix="setenc-shards-") as tmp:
        trained = Path(tmp) / "trained.faiss"
        faiss.write_index(index, str(trained))
        if _file_prefix(vectors):
            source = str(vectors.filename)  # an export's vectors.npy: read in place
        else:
            source = str(Path(tmp) / "vectors.npy")
            np.save(source, np.asarray(vectors))
        jobs = [(str(trained), source, int(a), int(b), str(Path(tmp) / f"shard{k}.faiss"), workers)
                for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_encode_shard, jobs))
        for part in parts:  # in row order: each inverted list gets its entries in the single build's order
            shard = faiss.read_index(part)
            ivf.merge_from(faiss.extract_index_ivf(shard), 0)
        index.ntotal = ivf.ntotal  # a wrapper (IndexPreTransform, ...) counts its own rows


def _file_prefix(vectors: np.ndarray) -> bool:
    """Whether `vectors` are the first rows of the .npy they are memory-mapped from, so workers can read that file."""
    if not (isinstance(vectors, np.memmap) and vectors.filename and str(vectors.filename).endswith(".npy")
            and len(vectors)):
        return False
    whole = np.load(vectors.filename, mmap_mode="r")
    return (whole.dtype == vectors.dtype and whole.shape[1:] == vectors.shape[1:] and len(whole) >= len(vectors)
            and np.array_equal(whole[0], vectors[0]) and np.array_equal(whole[len(vectors) - 1], vectors[-1]))


def _encode_shard(job: tuple[str, str, int, int, str, int]) -> str:
    """Worker of `add_sharded`: rows a..b of the .npy added to a copy of the trained index, written to `out`."""
    trained, source, a, b, out, workers = job
    faiss.omp_set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    index = faiss.read_index(trained)
    add_rows(index, np.load(source, mmap_mode="r")[a:b], first_id=a)
    faiss.write_index(index, out)
    return out


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


def search_refined(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int,
                   factor: int = PQ_REFINE, selector: RowSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by exact cosine among the index's top k·factor: (scores (Q, k), rows (Q, k)), missing hits −inf / −1.

    For compressed indexes ("ivfpq"): PQ codes rank near neighbours coarsely, so the candidates are re-scored on
    their stored `vectors` (read row by row from a memory map; ties go to the lower row, as in exact search).
    With `selector`, the candidates are only rows it keeps (`filtered_search`)."""
    _, rows = search(index, queries, k * factor, selector)  # (Q, k·factor)
    out_s = np.full((len(queries), k), -np.inf, np.float32)
    out_r = np.full((len(queries), k), -1, np.int64)
    for i, (q, r) in enumerate(zip(queries, rows)):
        r = np.unique(r[r >= 0])  # sorted: sequential reads, and lower rows first among ties
        s = np.asarray(vectors[r], np.float32) @ q
        top = np.argsort(-s, kind="stable")[:k]
        out_s[i, : len(top)], out_r[i, : len(top)] = s[top], r[top]
    return out_s, out_r


def search(index: faiss.Index, queries: np.ndarray, k: int,
           selector: RowSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`index.search`, or `filtered_search` when a selector restricts the rows."""
    return index.search(queries, k) if selector is None else filtered_search(index, queries, k, selector)


def filtered_search(index: faiss.Index, queries: np.ndarray, k: int,
                    selector: RowSelector) -> tuple[np.ndarray, np.ndarray]:
    """Top-k among the rows `selector` keeps: (scores, rows), as `index.search`.

    Always FAISS's own id selector (a bitmap: one bit test a row), never a NumPy scan of the matching rows: such a
    scan gathers the rows from the memory-mapped vectors, 4x slower than the flat index skipping non-matching rows
    itself at 100k articles (4.5 vs 1.0 ms for 1 % of them, 76 vs 18 ms for 30 %); it wins only on tiny subsets of
    small exports, where both take a fraction of a millisecond (0.03 vs 0.13 ms, 1 % of 10k; docs/bench_filter.md).
    Per kind:
    - flat: exact; the cost falls with the share kept (distances are computed for matching rows only).
    - IVF (ivf, ivfpq): nprobe is divided by the share kept (at most every list), so a filtered query still
      compares about as many matching vectors as an unfiltered one: recall holds for selective filters, and a
      filter keeping at most nprobe/nlist of the rows searches every list, i.e. exactly.
    - HNSW: a graph walk that skips most nodes loses its neighbours, so a filter keeping at most
      HNSW_EXACT_SHARE of the rows scans the graph's flat storage exactly (cheap: few rows); broader ones walk
      the graph with efSearch divided by the share kept.
    - any other factory string: FAISS's selector as that index supports it.
    """
    share = max(selector.fraction, 1.0 / max(1, index.ntotal))
    if isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF(sel=selector.sel, nprobe=min(index.nlist, math.ceil(index.nprobe / share)))
    elif isinstance(index, faiss.IndexHNSW) and share <= HNSW_EXACT_SHARE:
        return faiss.downcast_index(index.storage).search(queries, k, params=faiss.SearchParameters(sel=selector.sel))
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(sel=selector.sel, efSearch=math.ceil(index.hnsw.efSearch / share))
    else:
        params = faiss.SearchParameters(sel=selector.sel)
    try:
        return index.search(queries, k, params=params)
    except RuntimeError as e:
        raise SetencError(f"this index ({type(index).__name__}) cannot filter its rows "
                          f"({str(e).strip().splitlines()[-1][:200]}); re-export with flat, ivf, ivfpq or hnsw") from None


def set_search_params(index: faiss.Index, params: dict) -> None:
    """Apply search parameters (`nprobe`, `efSearch`, ...) by FAISS's own names, wrappers included."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)
