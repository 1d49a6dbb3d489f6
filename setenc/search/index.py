"""Search over an export: `SetIndex.load(dir).search(query, k)`, by set vector, re-ranked, or multi-vector.

The export folder and its files are `setenc.search.store`; writing and editing exports is `setenc.search.export`; building FAISS
indexes is `setenc.search.ann` (their names stay importable from here). Three ways to search one export:
- **set vector** (default): one vector per article in FAISS, the query's set vector against them; by default
  expanded (`setenc.search.expansion`): the top `candidates` hits re-scored on neighbour-averaged article vectors with
  an expanded query, as the export's manifest records (`expansion=` / `--expand` to choose, "none" for plain cosines);
- **two-stage** (`rerank="chamfer"`, ...): the top `candidates` set-vector hits re-scored on their photo vectors by
  a matcher, optionally fused with the set-vector cosine (`weight`, 1 = set vector only; `setenc.search.rerank`);
- **multi-vector** (`search_photos`): every photo searched on its own, aggregated per article (`setenc.search.multivector`).

Set-vector searches (`search`, `search_batch`, `similar`, re-ranked or not) take `where={"group": "Shoes"}`: only
articles whose stored metadata match are returned (`setenc.search.filters`; how each index kind applies it:
`ann.filtered_search`; re-ranking re-scores only matching candidates). An export made with a fused checkpoint
(photos + titles, `setenc.titles.fusion`) also takes title queries: `search(photos, title="blue denim jacket")`,
`search(title="...")` (title only) or photos alone, each scored by the sides it has.

An export of a view-aware head (`setenc.heads.views`: its photos encoded with their catalogue `views` tags) takes the query
photos' tags: `search(photos, views=["front", "side"])`, one tag per photo. A query without tags encodes its photos
as "unknown" (tags the head never saw too), which is what a tagless catalogue article is. On an export of a tag-free
head, tags are still checked (one per photo) and then ignored, as `SetEncoder.encode_sets` ignores them: a client
may send them whichever export it queries.

Photo queries need the encoder the export was made with. `SetIndex` rebuilds it from the manifest by itself when
it can: a parameter-free head from its config, a trained head from the recorded checkpoint path if that file still
has the recorded sha256. Otherwise pass `encoder=` (or `--checkpoint`); vector queries never need one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import torch
from PIL import Image

from setenc.search.ann import build_index, ivf_lists, search, search_refined, set_search_params
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.search.expansion import Expansion, ExpandedSearch
from setenc.search.export import check_encoder, delete_articles, encoder_from_manifest, export_index
from setenc.search.filters import Metadata, RowSelector, Where
from setenc.matching.calibration import Calibration
from setenc.matching.clusters import range_hits
from setenc.matching.explain import photo_pairs
from setenc.matching.matchers import Matcher
from setenc.search.multivector import DEFAULT_DEPTH, MAX_SIM, MultiVectorIndex
from setenc.photos.tta import spec_tta
from setenc.search.rerank import DEFAULT_CANDIDATES, check_weight, rerank as rerank_rows, reranker
from setenc.search.store import REEXPORT, PhotoStore, read_export, require_photos

__all__ = ["SetIndex", "build_index", "check_encoder", "delete_articles", "encoder_from_manifest", "export_index",
           "ivf_lists", "set_search_params"]

Query = np.ndarray | torch.Tensor | Sequence[str | os.PathLike | Image.Image]
Views = Sequence[str]  # one view tag per query photo


class SetIndex:
    """A loaded export: article vectors in FAISS plus the id map, searchable by photo set or vector.

    Args:
        index: the FAISS index.
        ids: row -> article id.
        manifest: the export's manifest.
        vectors: (N, E) article vectors (memory-mapped).
        encoder: the encoder for photo queries; built from the manifest on first use when None.
        photos: the articles' photo vectors (None for exports written before they were stored).
        metadata: the articles' filterable metadata (None for exports written before it was stored).
        expansion: neighbour expansion of set-vector searches (`setenc.search.expansion`): None = the one the
            manifest records ("none" for exports written before it did), else a spec ("dba5+qe2", "none").
    """

    def __init__(self, index: faiss.Index, ids: list[str], manifest: dict, vectors: np.ndarray,
                 encoder: SetEncoder | None = None, photos: PhotoStore | None = None,
                 metadata: Metadata | None = None, expansion: str | Expansion | None = None):
        self.index, self.ids, self.manifest, self.vectors, self.photos = index, ids, manifest, vectors, photos
        self.metadata = metadata
        self.expansion = Expansion.parse(manifest.get("expansion", "none") if expansion is None else expansion)
        if self.expansion is not None and manifest.get("fusion"):
            raise SetencError("a late-fusion export cannot be searched with neighbour expansion (its vectors' "
                              "lengths say which sides an article has); pass expansion='none'")
        self._expanded: ExpandedSearch | None = None
        self._encoder = encoder
        self._lookup = np.array([*ids, None], dtype=object)  # row -> id; FAISS's "no hit" row -1 -> None
        self._rows = {i: r for r, i in enumerate(ids)}
        self._multivector: MultiVectorIndex | None = None
        self._refine = manifest["index"].get("type") == "ivfpq"  # compressed codes: re-score on stored vectors
        set_search_params(index, manifest["index"]["params"])

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: SetEncoder | None = None, verify: bool = True,
             expansion: str | Expansion | None = None) -> "SetIndex":
        """Open an export; `verify` checks every file's sha256, `encoder` must be the one it was built with;
        `expansion`: None = the manifest's (see the class)."""
        path = Path(path)
        export = read_export(path, verify)
        if encoder is not None:
            check_encoder(export.manifest, encoder, path)
        return cls(export.index, export.ids, export.manifest, export.vectors, encoder, export.photos, export.metadata,
                   expansion)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._rows

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def fused(self) -> bool:
        """Whether the article vectors are photos + titles (late fusion `setenc.titles.fusion`, or a head trained with
        titles, whose config records their size): then title queries work."""
        return bool(self.manifest.get("fusion") or self.manifest.get("head", {}).get("config", {}).get("titles"))

    @property
    def view_aware(self) -> bool:
        """Whether the export's head adds a learned vector per photo view tag: then query tags change its vectors."""
        return bool(self.manifest.get("head", {}).get("config", {}).get("views"))

    def set_params(self, **params) -> None:
        """Trade speed for recall at search time, e.g. `set_params(nprobe=64)` or `set_params(efSearch=256)`."""
        set_search_params(self.index, params)

    @property
    def encoder(self) -> SetEncoder:
        """The encoder for photo queries: the one given, else rebuilt from the manifest."""
        if self._encoder is None:
            self._encoder = encoder_from_manifest(self.manifest)
        return self._encoder

    def row(self, article_id: str) -> int:
        """The row of an article of this export, or a one-line error."""
        if article_id not in self._rows:
            raise SetencError(f"article {article_id!r} is not in this export ({len(self)} articles)")
        return self._rows[article_id]

    def selector(self, where: Where | None) -> RowSelector | None:
        """The rows matching `where` (None: no filter); a one-line error for an unknown key or value."""
        if not where:
            return None
        if self.metadata is None:
            raise SetencError(f"where= needs the articles' metadata, which this export does not hold (written before "
                              f"exports stored metadata.json); {REEXPORT}")
        return RowSelector(self.metadata.mask(where, len(self)))

    # -- queries -------------------------------------------------------------------------------------
    def prepare(self, queries: Sequence[Query | None], titles: Sequence[str | None] | None = None,
                views: Sequence[Views | None] | None = None) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Queries -> ((Q, E) query vectors, each query's (n, D) photo vectors or None for a vector / title query).

        Each query: an (E,) vector, an (n, D) array of photo vectors, a photo set (paths / PIL images), or None
        for a title-only query. A 2-D array as a whole is a batch of (Q, E) vectors. `titles` (a fused export
        only): one title or None per query, fused with its photos by the export's encoder. `views`: per query one
        view tag per photo, or None (unknown; see the module docstring)."""
        if titles is not None:
            titles = self._check_titles(queries, titles)
        if views is not None:
            views = self._check_views(queries, views)
        batch = isinstance(queries, (np.ndarray, torch.Tensor)) and np.ndim(queries) == 2
        if titles is None and views is None and batch:
            return self._unit(np.asarray(queries, np.float32)), [None] * len(queries)
        rows, photos = [], []
        for q, title, tags in zip(queries, titles or [None] * len(queries), views or [None] * len(queries)):
            x = None if q is None else self.photo_vectors(q, len(rows))
            if q is not None and x is None:
                if title:
                    raise SetencError(f"query {len(rows)}: a vector query cannot take a title; give photos or None")
                rows.append(self._unit(np.asarray(q, np.float32)[None])[0])
            elif x is None and not title:
                raise SetencError(f"query {len(rows)}: no photos and no title: nothing to search for")
            else:
                rows.append(self.encoder.encode_articles([x], [title] if self.fused else None, views=[tags])[0])
            photos.append(x)
        vecs = np.stack(rows).astype(np.float32) if rows else np.zeros((0, self.dim), np.float32)
        return vecs, photos

    def photo_vectors(self, query: Query, position: int = 0) -> np.ndarray | None:
        """A query's (n, D) photo vectors (paths / PIL images embedded by the encoder); None for an (E,) vector."""
        array = isinstance(query, (np.ndarray, torch.Tensor))
        if array and np.ndim(query) == 1:
            return None
        if array and np.ndim(query) == 2:
            x, want = np.asarray(query, np.float32), self.manifest.get("photo_dim", query.shape[1])
            if x.shape[0] == 0 or x.shape[1] != want or not np.isfinite(x).all():
                raise SetencError(f"query {position}: photo vectors must be a non-empty finite (n, {want}) array, "
                                  f"got shape {tuple(x.shape)}")
            return x
        if isinstance(query, (list, tuple)) and query and all(isinstance(p, (str, os.PathLike, Image.Image))
                                                              for p in query):
            return self.encoder.embed_photos(query)
        raise SetencError(f"query {position}: expected an ({self.dim},) vector, an (n, D) array of photo vectors "
                          f"or a non-empty list of photo paths / PIL images, got {type(query).__name__}")

    def _check_titles(self, queries: Sequence[Query | None], titles: Sequence[str | None]) -> list[str | None]:
        """One title (or None) per query, on an export whose vectors hold titles; else a one-line error."""
        if not self.fused:
            raise SetencError("this export holds photo vectors only (no title fusion): title queries need an export "
                              "made with a fused checkpoint (scripts/export.py --checkpoint OUT/fused/....pt)")
        if isinstance(titles, str) or len(titles) != len(queries):
            raise SetencError(f"{len(queries)} queries but titles is not a list of {len(queries)} (a title or None "
                              "each)")
        return [None if t is None else str(t) for t in titles]

    def _check_views(self, queries: Sequence[Query | None],
                     views: Sequence[Views | None]) -> list[tuple[str, ...] | None]:
        """One tag list (or None) per query, one tag per query photo, checked before any photo is embedded; else a
        one-line error. An (n, D) query's rows are photos, or under an `elements` TTA `per_photo` rows a photo."""
        if isinstance(views, str) or len(views) != len(queries):
            raise SetencError(f"{len(queries)} queries but views is not a list of {len(queries)} (a list of view "
                              "tags or None each)")
        per_photo = spec_tta(self.manifest.get("backbone", {})).per_photo
        out = []
        for position, (q, tags) in enumerate(zip(queries, views)):
            if tags is None:
                out.append(None)
                continue
            if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
                raise SetencError(f"query {position}: views must be a list of view tags (text), one per photo")
            array = isinstance(q, (np.ndarray, torch.Tensor))
            rows = (len(q) if np.ndim(q) == 2 else 0) if array else len(q or ()) * per_photo
            if len(tags) * per_photo != rows:
                raise SetencError(f"query {position}: {len(tags)} view tags for {rows // per_photo} photos: give one "
                                  "tag per query photo (a vector or title-only query takes none)")
            out.append(tuple(tags))
        return out

    def vectorize(self, queries: Sequence[Query | None], titles: Sequence[str | None] | None = None,
                  views: Sequence[Views | None] | None = None) -> np.ndarray:
        """Queries -> (Q, E) query vectors (see `prepare`)."""
        return self.prepare(queries, titles, views)[0]

    def _unit(self, x: np.ndarray) -> np.ndarray:
        """Vector queries as searched: unit length, except on a late-fusion export, whose vectors' norms say which
        sides they have (a photos-only article is √w long), so they are searched as they are."""
        if x.shape[-1] != self.dim:
            raise SetencError(f"query vectors are {x.shape[-1]}-d, this index holds {self.dim}-d article vectors")
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        if not (np.isfinite(x).all() and (norm > 0).all()):
            raise SetencError("a query vector is zero or holds NaN/inf; it has no direction to search for")
        return x if self.manifest.get("fusion") else x / norm

    # -- searching -----------------------------------------------------------------------------------
    def search_batch(self, queries: Sequence[Query | None], k: int = 10, rerank: str | Matcher | None = None,
                     candidates: int = DEFAULT_CANDIDATES, weight: float = 0.0, where: Where | None = None,
                     titles: Sequence[str | None] | None = None,
                     views: Sequence[Views | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids (Q, k) object, scores (Q, k) float32), best first; missing hits: id None, score -inf.

        Args:
            rerank: a matcher (name or instance) re-scoring the top `candidates` set-vector hits on their photos;
                None = set-vector cosines only. Needs photo queries and an export with photo vectors.
            weight: with `rerank`, the share of the set-vector cosine in the score (1 = set vector only).
            where: only articles whose metadata match, e.g. `{"group": "Shoes", "color": ["blue", "navy"]}`
                (`setenc.search.filters`); fewer than k match: the rest are missing hits.
            titles: per query a title or None (a fused export only; a title-only query is None + its title).
            views: per query its photos' view tags (one each) or None = unknown (see the module docstring).
        """
        matcher = None if rerank is None else reranker(rerank)  # bad names and weights fail before any encoding
        weight = check_weight(weight)
        if matcher is not None:
            require_photos(self.photos, f"re-ranking with {matcher.name!r}")  # before any photo is embedded
        selector = self.selector(where)
        vecs, photos = self.prepare(queries, titles, views)
        return self._search(vecs, photos, k, matcher, candidates, weight, selector)

    def _search(self, vecs: np.ndarray, photos: list[np.ndarray | None], k: int, matcher: Matcher | None,
                candidates: int, weight: float, selector: RowSelector | None = None,
                skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`search_batch` on prepared queries: (Q, E) query vectors and their photo vectors. With an expansion, the
        top `candidates` set-vector hits are re-scored expanded (`skip[i]`: a row query i never expands with)."""
        if k < 1 or candidates < 1:
            raise SetencError(f"k={k} and candidates={candidates} must be at least 1")
        if matcher is None and self.expansion is None:
            scores, rows = self._ann(vecs, k, selector)  # (Q, k) each
            return self._lookup[rows], np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        if matcher is None:
            set_scores, set_rows = self._ann(vecs, max(k, candidates), selector)
            scores = self.expanded.scores(vecs, set_rows, skip)
            order = np.lexsort((np.where(set_rows >= 0, set_rows, len(self)), -scores), axis=1)[:, :k]
            rows = np.take_along_axis(set_rows, order, axis=1)
            return self._lookup[rows], np.take_along_axis(scores, order, axis=1)
        store = require_photos(self.photos, f"re-ranking with {matcher.name!r}")
        if any(p is None for p in photos):
            raise SetencError("re-ranking needs each query's photos (paths, PIL images or an (n, D) array), "
                              "not a single vector")
        set_scores, set_rows = self._ann(vecs, max(k, candidates), selector)  # (Q, C) each: matching rows only
        if self.expansion is not None:
            set_scores = self.expanded.scores(vecs, set_rows, skip)
        out_rows = np.full((len(vecs), k), -1, np.int64)
        out_scores = np.full((len(vecs), k), -np.inf, np.float32)
        for q, (x, rows, scores) in enumerate(zip(photos, set_rows, set_scores)):
            r, s = rerank_rows(matcher, x, store, rows, scores, k, weight)
            out_rows[q, : len(r)], out_scores[q, : len(s)] = r, s
        return self._lookup[out_rows], out_scores

    @property
    def expanded(self) -> ExpandedSearch:
        """The export's augmented vectors, filled on demand through its own index (`self.expansion` must be set)."""
        if self._expanded is None or self._expanded.expansion != self.expansion:
            self._expanded = ExpandedSearch(self.expansion, self.vectors, lambda v, k: self._ann(v, k))
        return self._expanded

    def _ann(self, vecs: np.ndarray, k: int, selector: RowSelector | None = None) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-k of the query vectors among the selected rows (all: None); an "ivfpq" index's hits re-scored
        exactly (`ann.search_refined`)."""
        if self._refine:
            return search_refined(self.index, self.vectors, vecs, k, selector=selector)
        return search(self.index, vecs, k, selector)

    def search(self, query: Query | None = None, k: int = 10, rerank: str | Matcher | None = None,
               candidates: int = DEFAULT_CANDIDATES, weight: float = 0.0, where: Where | None = None,
               title: str | None = None, views: Views | None = None) -> list[tuple[str, float]]:
        """The k nearest articles of one query (a vector, photo vectors or a photo set; with a fused export also
        or only a `title`) as (id, score), among the articles matching `where`. `views`: one view tag per query
        photo, for a view-aware export; without them its photos are encoded as "unknown" view."""
        ids, scores = self.search_batch([query], k, rerank, candidates, weight, where,
                                        None if title is None else [title], None if views is None else [views])
        return [(i, float(s)) for i, s in zip(ids[0], scores[0]) if i is not None]

    def search_photos(self, query: Query, k: int = 10, aggregate: str | Matcher = MAX_SIM,
                      depth: int = DEFAULT_DEPTH) -> list[tuple[str, float]]:
        """Multi-vector search: each query photo searches every stored photo; `aggregate` ("max" or a matcher
        name) scores each article hit. The baseline to one vector per article (`setenc.search.multivector`)."""
        store = require_photos(self.photos, "multi-vector search")
        photos = self.photo_vectors(query)
        if photos is None:
            raise SetencError("multi-vector search needs the query's photos, not a single vector")
        if self._multivector is None:
            self._multivector = MultiVectorIndex(store)
        rows, scores = self._multivector.search(photos, k, aggregate, depth)
        return [(self.ids[r], float(s)) for r, s in zip(rows, scores)]

    @property
    def calibration(self) -> Calibration:
        """The export's checkpoint's score -> P(same group) map (`setenc.matching.calibration`), or a one-line error."""
        cal = getattr(self.encoder, "calibration", None)
        if cal is None:
            raise SetencError("this export's encoder carries no calibration (a parameter-free head, or a checkpoint "
                              "trained before issue 27): probabilities need a checkpoint from scripts/train.py")
        return cal

    def matches(self, query: Query | None = None, min_probability: float = 0.5, where: Where | None = None,
                title: str | None = None, views: Views | None = None) -> list[tuple[str, float, float]]:
        """EVERY article that is the same group as the query with at least `min_probability` (the calibration,
        rescaled to this export's size), not only the top k: a FAISS range search at the matching cosine. Returns
        (id, probability, cosine), best first; an article of the export as the query finds itself too."""
        radius = self.calibration.score_for(min_probability, len(self))
        vecs, _ = self.prepare([query], None if title is None else [title], None if views is None else [views])
        rows, scores = range_hits(self.index, vecs, radius)[0] if np.isfinite(radius) else (np.zeros(0, int), [])
        if where:
            keep = self.selector(where).mask[rows]
            rows, scores = rows[keep], np.asarray(scores)[keep]
        probs = self.calibration.probability(np.asarray(scores), len(self))
        return [(self.ids[r], float(p), float(s)) for r, p, s in zip(rows, probs, scores)]

    def pair(self, a: str | np.ndarray, b: str, how: str = "linear") -> dict:
        """Article `a` (an id of the export, or a query's (n, D) photo vectors) and article `b` of the export: their
        cosine, P(same group) (null where the encoder carries no calibration) and the photo pairs that drive the
        match (`setenc.matching.explain`), best first."""
        query = not isinstance(a, str)
        va = self.prepare([a])[0][0] if query else np.asarray(self.vectors[self.row(a)], np.float32)
        vb = np.asarray(self.vectors[self.row(b)], np.float32)
        score = float(va @ vb / max(float(np.linalg.norm(va) * np.linalg.norm(vb)), 1e-12))
        cal = getattr(self.encoder, "calibration", None) if self.manifest["checkpoint"].get("sha256") else None
        per_photo = spec_tta(self.manifest.get("backbone", {})).per_photo
        pairs = photo_pairs(np.asarray(a) if query else self.article_photos(a), self.article_photos(b), how, per_photo)
        return {"a": None if query else a, "b": b, "score": round(score, 6),
                "probability": None if cal is None else round(float(cal.probability(score, len(self))), 6),
                "pairs": [p.as_dict() for p in pairs]}

    def article_photos(self, article_id: str) -> np.ndarray:
        """An article's stored (n, D) photo vectors: a query for `search` or `search_photos`."""
        return require_photos(self.photos, "an article's photos").set(self.row(article_id))

    def similar(self, article_id: str, k: int = 10, rerank: str | Matcher | None = None,
                candidates: int = DEFAULT_CANDIDATES, weight: float = 0.0,
                where: Where | None = None) -> list[tuple[str, float]]:
        """The k articles most similar to an article of this export (among those matching `where`), itself left
        out: its stored vector and photo vectors are the query, so no encoder is needed."""
        r = self.row(article_id)
        selector = self.selector(where)
        vec = self._unit(np.asarray(self.vectors[r : r + 1], np.float32))
        photos = [None if self.photos is None else self.photos.set(r)]
        ids, scores = self._search(vec, photos, k + 1, None if rerank is None else reranker(rerank), candidates,
                                   check_weight(weight), selector, np.array([r]))
        return [(i, float(s)) for i, s in zip(ids[0], scores[0]) if i is not None and i != article_id][:k]
