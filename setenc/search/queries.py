"""Many queries in one process: the JSONL query file and answering it against one loaded export.

One query a line, exactly one of:
```
{"photos": ["q1/front.jpg", "q1/back.jpg"]}    photo paths, relative to the query file (a new query set)
{"id": "a17"}                                  an article of the export: its most similar articles, itself left out
{"vector": [0.1, ...]}                         an (E,) article vector, searched as it is (no re-ranking)
{"title": "blue denim jacket"}                 a title alone (an export of a fused checkpoint)
```
A photos line may also carry a `"title"` (fused exports) and `"views": ["front", "side"]`, one view tag per photo
(for a view-aware export; `SetIndex.search`'s `views`). Any line may carry `"where": {"group": "Shoes"}` (a list
value: any of), which adds to / overrides the `where` given for the whole file. An optional `"qid"` is echoed back. Every line is read and checked before the first search, so a bad line is one
error naming it and costs no work. Each answer is one JSON object: `{"line", "qid", "hits": [{"id", "score"}]}`,
in the order of the file. Photo and vector queries are searched in batches (one FAISS call per batch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from setenc.catalogs.manifest import iter_jsonl
from setenc.photos import load_image
from setenc.plumbing.errors import ImageError, SetencError
from setenc.search.filters import Where
from setenc.search.index import SetIndex

KINDS = ("photos", "id", "vector")  # the keys a query line may carry, exactly one of them
BATCH = 64  # photo / vector queries searched together


@dataclass
class QueryLine:
    """One checked line of a query file."""

    line: int
    kind: str
    value: object  # list[Path] | str | np.ndarray | None (a title-only query)
    qid: object = None
    title: str | None = None
    where: dict | None = None
    views: list[str] | None = None


def load_query_photo(path: str | os.PathLike, name: str | None = None):
    """A query photo through the library's safe decoder; its error speaks of a query photo, not of a catalogue.

    `name`: what the client called the file (an upload is decoded from a temporary file).
    """
    try:
        return load_image(path)
    except ImageError as e:
        reason = str(e).removeprefix(f"{path}: ").split(";")[0].split(" -- ")[0]  # what is wrong, not the remedy
        raise ImageError(f"{name or path}: {reason}; a query photo must be a readable JPEG, PNG or WebP file") from None


def read_queries(path: str | os.PathLike, index: SetIndex, rerank: bool = False) -> list[QueryLine]:
    """Read and check a query file against `index`: paths exist, ids are in the export, vectors fit."""
    path = Path(path)
    if not path.is_file():
        raise SetencError(f"{path}: query file not found")
    out = []
    with open(path, "rb") as f:
        for where, lineno, obj in iter_jsonl(f, path):
            keys = [k for k in KINDS if isinstance(obj, dict) and k in obj]
            title = obj.get("title") if isinstance(obj, dict) else None
            if title is not None and not keys:
                keys = ["title"]
            if len(keys) != 1:
                raise SetencError(f"{where}: a query is an object with exactly one of {', '.join(KINDS)} "
                                  "(or a title alone)")
            kind, value = keys[0], obj[keys[0]]
            if title is not None and (not isinstance(title, str) or not title.strip() or kind in ("id", "vector")):
                raise SetencError(f"{where}: 'title' must be non-empty text, with photos or alone")
            if title is not None and not index.fused:
                raise SetencError(f"{where}: a title query needs an export of a fused checkpoint (photos + titles)")
            filters = obj.get("where")
            if filters is not None:
                if not isinstance(filters, dict):
                    raise SetencError(f"{where}: 'where' must be an object, e.g. {{\"group\": \"Shoes\"}}")
                try:
                    index.selector(filters)
                except SetencError as e:
                    raise SetencError(f"{where}: {e}") from None
            if kind == "title":
                value = None
            elif kind == "photos":
                if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
                    raise SetencError(f"{where}: 'photos' must be a non-empty list of photo paths")
                value = [path.parent / p for p in value]
                missing = [str(p) for p in value if not p.is_file()]
                if missing:
                    raise SetencError(f"{where}: photo not found: {missing[0]}")
            elif kind == "id":
                index.row(str(value))  # unknown ids fail here, naming the id
                value = str(value)
            else:
                try:
                    value = np.asarray(value, np.float32)
                except (TypeError, ValueError):
                    value = None
                if value is None or value.shape != (index.dim,) or not np.isfinite(value).all():
                    raise SetencError(f"{where}: 'vector' must be a list of {index.dim} finite numbers")
                if rerank:
                    raise SetencError(f"{where}: a vector query cannot be re-ranked (no photos); give photos or an id")
            views = obj.get("views")
            if views is not None and (kind != "photos" or not isinstance(views, list) or len(views) != len(value)
                                      or not all(isinstance(t, str) for t in views)):
                raise SetencError(f"{where}: 'views' must list one view tag per photo of a photos query")
            if rerank and value is None:
                raise SetencError(f"{where}: a title-only query cannot be re-ranked (no photos)")
            out.append(QueryLine(lineno, kind, value, obj.get("qid"), title, filters, views))
    return out


def answer(index: SetIndex, queries: list[QueryLine], k: int = 10, rerank: str | None = None,
           candidates: int = 200, weight: float = 0.0, where: Where | None = None) -> Iterator[dict]:
    """One result object per query, in file order (see the module docstring); `where` filters every line."""
    pending: list[QueryLine] = []
    batch_where: dict = {}

    def flush() -> Iterator[dict]:
        titles = [q.title for q in pending] if index.fused else None
        values = [[load_query_photo(p) for p in q.value] if q.kind == "photos" else q.value for q in pending]
        ids, scores = index.search_batch(values, k, rerank, candidates, weight, batch_where,
                                         titles, [q.views for q in pending])
        for q, row_ids, row_scores in zip(pending, ids, scores):
            yield _result(q, [(i, float(s)) for i, s in zip(row_ids, row_scores) if i is not None])
        pending.clear()

    for q in queries:
        line_where = {**(where or {}), **(q.where or {})}
        if pending and (q.kind == "id" or line_where != batch_where):  # a batch shares one filter
            yield from flush()
        if q.kind == "id":
            yield _result(q, index.similar(q.value, k, rerank, candidates, weight, line_where))
            continue
        batch_where = line_where
        pending.append(q)
        if len(pending) == BATCH:
            yield from flush()
    if pending:
        yield from flush()


def _result(q: QueryLine, hits: list[tuple[str, float]]) -> dict:
    return {"line": q.line, "qid": q.qid, "hits": [{"id": i, "score": round(s, 6)} for i, s in hits]}
