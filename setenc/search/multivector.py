"""Multi-vector search, the baseline to the set vector: every photo is its own vector, labelled with its article.

A FAISS `IndexIDMap` over the export's photo vectors (`photos.npy`) carries each photo's article row as its id.
Each query photo searches it for its `depth` nearest photos; the articles hit form the candidates, and each is
scored exactly on its stored photos by an aggregate: `max` (max-sim: the best photo pair) or any matcher of the
`MATCHERS` registry (`chamfer`: each photo scored by its best counterpart, both ways). One hit per article. When
`depth` covers every photo, the ranking equals scoring every article by brute force.

The photo index is built in memory when first used, not stored: a flat index is a copy of photos.npy in float32,
built in one pass, so storing it would only double the export. It holds P photos, several times the articles,
which is what this baseline costs next to one vector per article.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from setenc.search.ann import ADD_CHUNK
from setenc.matching.matchers import Matcher
from setenc.search.rerank import match_rows, rank, reranker
from setenc.heads.sets import pad_sets
from setenc.search.store import PhotoStore

MAX_SIM = "max"  # the aggregate that is no matcher: the best single photo pair
DEFAULT_DEPTH = 100  # photos retrieved per query photo


class MultiVectorIndex:
    """Exact inner-product search over every photo of an export, aggregated per article."""

    def __init__(self, store: PhotoStore):
        self.store = store
        self.index = faiss.IndexIDMap(faiss.IndexFlatIP(store.dim))
        owners = store.owners()
        for start in range(0, len(owners), ADD_CHUNK):
            part = np.ascontiguousarray(store.photos[start : start + ADD_CHUNK], np.float32)
            self.index.add_with_ids(part, owners[start : start + ADD_CHUNK])

    def candidates(self, query_photos: np.ndarray, depth: int = DEFAULT_DEPTH) -> np.ndarray:
        """Sorted unique article rows among the `depth` nearest photos of every query photo."""
        _, owners = self.index.search(np.ascontiguousarray(query_photos, np.float32), depth)  # (n, depth)
        return np.unique(owners[owners >= 0])

    def search(self, query_photos: np.ndarray, k: int = 10, aggregate: str | Matcher = MAX_SIM,
               depth: int = DEFAULT_DEPTH) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the k best articles for one query's `(n, D)` photo vectors, best first."""
        rows = self.candidates(query_photos, depth)
        if aggregate == MAX_SIM:
            scores = max_sim(query_photos, self.store, rows)
        else:
            scores = match_rows(reranker(aggregate), query_photos, self.store, rows)
        return rank(rows, scores.astype(np.float32), k)


def max_sim(query_photos: np.ndarray, store: PhotoStore, rows: np.ndarray) -> np.ndarray:
    """(C,) the best cosine between any query photo and any photo of each article `rows`."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    gx, gmask = pad_sets(store.sets(rows))  # (C, M, D)
    S = torch.einsum("nd,cmd->cnm", torch.as_tensor(query_photos, dtype=torch.float32), gx)
    return S.masked_fill(~gmask[:, None, :], -torch.inf).amax((1, 2)).clamp(-1, 1).numpy()
