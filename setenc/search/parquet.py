"""An export's article vectors as Parquet files, in the embedding-reader / clip-retrieval convention.

Why: Spark, DuckDB, pandas, `datasets`, autofaiss and embedding-reader read Parquet, not a FAISS folder. The output
is a folder of `part-00000.parquet`, `part-00001.parquet`, ... (name order = row order = the export's row order),
each a table with

- `id` (string): the article id;
- `embedding` (list<float32>): the article's unit vector (float32 even from a float16 export, as readers assume);
- `n_photos` (int64) when the export stored photo vectors;
- the catalogue's fields for that article when its manifest is at hand: `group`, `title`, `partition`, then every
  other manifest key (a column whose values mix types is written as JSON strings).

`EmbeddingReader(folder, file_format="parquet", embedding_column="embedding", meta_columns=["id"])` streams it.
pyarrow is the optional `[scale]` extra; it is imported on call.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from setenc.catalogs import Catalog, load_catalog
from setenc.plumbing.errors import SetencError
from setenc.search.store import read_export

EMBEDDING = "embedding"
FIELDS = ("group", "title", "partition")  # Article attributes written as columns, before the free-form keys


def export_parquet(export_dir: str | os.PathLike, out_dir: str | os.PathLike,
                   catalog: Catalog | str | os.PathLike | None = None, rows_per_file: int = 100_000,
                   verify: bool = True) -> dict:
    """Write the article vectors of the export folder `export_dir` as Parquet files into `out_dir` (a new folder).

    Args:
        catalog: where the metadata columns come from; default the catalogue the export recorded (when its file is
            still there), else none (id, embedding and n_photos only).
        rows_per_file: articles per file (capped so one file's embedding list stays under 2**31 floats).
        verify: check the export's sha256 checksums first.

    Returns: `{"out", "files", "rows", "dim", "columns", "catalog"}`.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SetencError('Parquet export needs pyarrow: pip install "setenc[scale]"') from None
    if rows_per_file < 1:
        raise SetencError(f"rows_per_file={rows_per_file} must be >= 1")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise SetencError(f"{out}: exists and is not empty; delete it or choose another output folder")
    export = read_export(Path(export_dir), verify)
    ids, vectors = export.ids, export.vectors
    dim = int(vectors.shape[1]) if vectors.ndim == 2 else 0
    source, catalog = _catalog(catalog, export.manifest)
    columns = {"id": pa.array(ids, pa.string())}
    if export.photos is not None:
        columns["n_photos"] = pa.array(np.diff(export.photos.offsets), pa.int64())
    columns.update(_metadata(catalog, ids, pa) if catalog is not None else {})
    rows = max(1, min(rows_per_file, (2**31 - 1) // max(dim, 1)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))  # a crash leaves no half folder
    files = []
    try:
        for k, a in enumerate(range(0, len(ids), rows)):
            part = np.ascontiguousarray(vectors[a:a + rows], dtype=np.float32)  # (n, E), read from the memory map
            offsets = pa.array(np.arange(0, part.size + 1, dim, dtype=np.int32), pa.int32())
            table = pa.table({"id": columns["id"].slice(a, len(part)),
                              EMBEDDING: pa.ListArray.from_arrays(offsets, pa.array(part.ravel())),
                              **{n: c.slice(a, len(part)) for n, c in columns.items() if n != "id"}})
            name = f"part-{k:05d}.parquet"
            pq.write_table(table, tmp / name)
            files.append(name)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "files": files, "rows": len(ids), "dim": dim,
            "columns": ["id", EMBEDDING, *[n for n in columns if n != "id"]], "catalog": source}


def _catalog(catalog: Catalog | str | os.PathLike | None, manifest: dict) -> tuple[str | None, Catalog | None]:
    """(where the metadata comes from, the catalogue) — the one given, else the export's recorded one if present."""
    if isinstance(catalog, Catalog):
        return catalog.name, catalog
    path = catalog if catalog is not None else manifest.get("catalog")
    if path is None or (catalog is None and not Path(path).exists()):
        return None, None  # nothing recorded, or the recorded catalogue moved: ids and vectors only
    return str(path), load_catalog(path)


def _metadata(catalog: Catalog, ids: list[str], pa) -> dict:
    """Column name -> pyarrow array over the export's rows; articles missing from the catalogue get nulls."""
    by_id = {a.id: a for a in catalog.articles}
    rows = [by_id.get(i) for i in ids]
    keys = [f for f in FIELDS if any(getattr(a, f) is not None for a in rows if a)]
    taken = ("id", "images", "n_photos", EMBEDDING, *keys)
    keys += list(dict.fromkeys(k for a in rows if a for k in a.meta if k not in taken))
    out = {}
    for key in keys:
        values = [None if a is None else getattr(a, key) if key in FIELDS else a.meta.get(key) for a in rows]
        try:
            out[key] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: one JSON string per value
            out[key] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return out
