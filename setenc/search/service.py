"""The HTTP search service: one export and its encoder loaded once, behind FastAPI (`scripts/serve.py`).

```
GET  /health                    the export: articles, dims, index type, photo vectors stored, fusion, metadata keys
POST /search                    multipart: photos (files) and / or paths (form fields), title, views, k, rerank,
                                candidates, weight, where (repeatable)
GET  /articles/{id}/similar     ?k=&rerank=&candidates=&weight=&where=: an article of the export as the query,
                                itself left out; the id is opaque and may hold slashes (`Banana/Banana-a`, sent as
                                it is or percent-encoded)
GET  /articles/{a}/match/{b}    ?how=linear|chamfer: same product or not - the pair's cosine, P(same group) (null
                                where the export's checkpoint carries no calibration) and the photo pairs behind it
```
`where` is `KEY=VALUE`, repeatable as in scripts/search.py (`?where=group=Shoes&where=group=Sandals`: any of;
different keys: all of). `title` (an export of a fused checkpoint) is fused with the photos, or is the query alone.
`views` (`front,side`: one view tag per photo, uploaded photos first, then paths) tags the query photos for an export
of a view-aware head; without it they count as "unknown" view (`SetIndex.search`).
Answers are `{"hits": [{"id", "score"}], "took_ms"}`. What a client gets wrong is a 4xx with one clear `detail`:
an empty query or bad option 400, a malformed field (`k=abc`) 422, a file that is not a photo 415, a photo over the
size limit 413, an unknown article 404; nothing a client sends yields a 500. Uploads are decoded by the library's safe
decoder (`photos.load_image`: decompression bombs refused, EXIF orientation, alpha on white; an error speaks of a
query photo, `search.queries.load_query_photo`). Paths are only read under
`photo_root` (off by default): a service must not open whatever file a client names.

FastAPI is the optional `[serve]` extra, imported when an app is made, so the library imports without it (and
this module has no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime).
Endpoints are plain functions: FastAPI runs them on its thread pool, and FAISS and torch release the GIL.
"""

import os
import tempfile
import time
from pathlib import Path

from setenc.plumbing.errors import ImageError, SetencError
from setenc.search.filters import parse_where
from setenc.search.index import SetIndex
from setenc.search.queries import load_query_photo
from setenc.search.rerank import DEFAULT_CANDIDATES

MAX_PHOTO_BYTES = 20 * 2**20  # one uploaded photo
MAX_PHOTOS = 32  # photos in one query set
MAX_K = 1000


def create_app(index: SetIndex, photo_root: str | os.PathLike | None = None, max_photo_bytes: int = MAX_PHOTO_BYTES,
               max_photos: int = MAX_PHOTOS):
    """A FastAPI app serving `index` (load the encoder first: `index.encoder.backbone`, so no request pays it)."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
    except ImportError:
        raise SetencError("the search service needs the [serve] extra: pip install 'setenc[serve]'") from None

    root = Path(photo_root).resolve() if photo_root else None
    app = FastAPI(title="setenc search", description=__doc__)

    @app.exception_handler(SetencError)
    def user_error(request: Request, exc: SetencError) -> JSONResponse:
        status = 415 if isinstance(exc, ImageError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    def bad_field(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A malformed field is one plain `detail` like every other client error, not FastAPI's list of dicts."""
        what = "; ".join(f"{e['loc'][-1]}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": what}, status_code=422)

    def check_k(k: int) -> None:
        if not 1 <= k <= MAX_K:
            raise SetencError(f"k={k} must be between 1 and {MAX_K}")

    def decode(upload: UploadFile):
        data = upload.file.read(max_photo_bytes + 1)
        name = upload.filename or "upload"
        if len(data) > max_photo_bytes:
            raise HTTPException(413, f"{name}: over the limit of {max_photo_bytes // 2**20} MiB a photo")
        if not data:
            raise ImageError(f"{name}: empty file, not a photo")
        with tempfile.NamedTemporaryFile(suffix=Path(name).suffix) as f:  # the safe decoder reads files
            f.write(data)
            f.flush()
            return load_query_photo(f.name, name)

    def resolve(path: str) -> Path:
        if root is None:
            raise SetencError("photo paths are disabled on this service (start it with --photo-root); upload photos")
        full = (root / path).resolve()
        if not full.is_relative_to(root):
            raise SetencError(f"{path}: outside the photo root")
        if not full.is_file():
            raise HTTPException(404, f"{path}: no such photo under the photo root")
        return full

    def answer(hits: list[tuple[str, float]], start: float) -> dict:
        return {"hits": [{"id": i, "score": round(s, 6)} for i, s in hits],
                "took_ms": round(1e3 * (time.perf_counter() - start), 2)}

    @app.get("/health")
    def health() -> dict:
        m = index.manifest
        return {"status": "ok", "articles": len(index), "dim": index.dim, "index": m["index"]["type"],
                "photo_vectors": index.photos is not None, "backbone": m["backbone"].get("id"),
                "head": m["head"]["name"], "fusion": m.get("fusion"),
                "metadata_keys": None if index.metadata is None else index.metadata.keys}

    @app.post("/search")
    def search(photos: list[UploadFile] = File(default=[]), paths: list[str] = Form(default=[]), k: int = Form(10),
               rerank: str | None = Form(None), candidates: int = Form(DEFAULT_CANDIDATES),
               weight: float = Form(0.0), title: str | None = Form(None), where: list[str] = Form(default=[]),
               views: str | None = Form(None)) -> dict:
        start = time.perf_counter()
        check_k(k)
        title = (title or "").strip() or None
        if not photos and not paths and title is None:
            raise SetencError("the query set is empty: upload photos (field 'photos'), give paths or a title")
        if len(photos) + len(paths) > max_photos:
            raise SetencError(f"{len(photos) + len(paths)} photos in one query; at most {max_photos}")
        filters = parse_where(where)
        index.selector(filters)  # a bad filter fails before any photo is decoded
        tags = [t.strip() for t in views.split(",")] if (views or "").strip() else None
        query = [decode(p) for p in photos] + [load_query_photo(resolve(p), p) for p in paths]
        return answer(index.search(query or None, k, rerank or None, candidates, weight, filters, title, tags), start)

    @app.get("/articles/{article_id:path}/similar")  # ids may hold slashes (the folder adapter's `group/article`)
    def similar(article_id: str, k: int = 10, rerank: str | None = None, candidates: int = DEFAULT_CANDIDATES,
                weight: float = 0.0, where: list[str] = Query(default=[])) -> dict:
        start = time.perf_counter()
        check_k(k)
        if article_id not in index:
            raise HTTPException(404, f"article {article_id!r} is not in this export")
        return answer(index.similar(article_id, k, rerank or None, candidates, weight, parse_where(where)), start)

    @app.get("/articles/{a:path}/match/{b:path}")
    def match(a: str, b: str, how: str = "linear") -> dict:
        start = time.perf_counter()
        for article_id in (a, b):
            if article_id not in index:
                raise HTTPException(404, f"article {article_id!r} is not in this export")
        return {**index.pair(a, b, how), "took_ms": round(1e3 * (time.perf_counter() - start), 2)}

    return app
