"""Parquet export of an export folder's article vectors: rows, vectors and metadata as embedding-reader reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, script_env
from setenc.encoder import SetEncoder
from setenc.plumbing.errors import SetencError
from setenc.search.export import export_index
from setenc.search.parquet import export_parquet

pq = pytest.importorskip("pyarrow.parquet")


def _catalog(root: Path, n: int = 7) -> Path:
    """n articles of 1-3 solid-colour photos with a title, a numeric and a mixed-type metadata key."""
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    lines = []
    for a in range(n):
        images = []
        for j in range(1 + a % 3):
            path = root / "img" / f"a{a}_{j}.png"
            Image.fromarray(np.full((8, 8, 3), rng.integers(0, 255, 3), np.uint8)).save(path)
            images.append(f"img/{path.name}")
        lines.append({"id": f"a{a}", "images": images, "group": f"g{a % 3}", "title": f"article {a}",
                      "price": 10 + a, "tags": ["x", "y"] if a % 2 else "none"})
    (root / "catalog.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "catalog.jsonl"


@pytest.fixture
def exported(tmp_path, fake_backbone) -> Path:
    export_index(SetEncoder.parameter_free(fake_backbone), _catalog(tmp_path / "cat"), tmp_path / "cache",
                 tmp_path / "idx", progress=False)
    return tmp_path / "idx"


def _read_like_embedding_reader(folder: Path, columns: list[str]):
    """What embedding-reader's parquet format does: files in name order, np.stack of the embedding column."""
    tables = [pq.read_table(f) for f in sorted(folder.glob("*.parquet"))]
    emb = np.concatenate([np.stack(t["embedding"].to_numpy()) for t in tables])
    meta = {c: [v for t in tables for v in t[c].to_pylist()] for c in columns}
    return emb, meta, tables


def test_rows_vectors_and_metadata_round_trip(exported, tmp_path):
    out = export_parquet(exported, tmp_path / "pq", rows_per_file=3)
    assert out["files"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"] and out["rows"] == 7
    ids = json.loads((exported / "ids.json").read_text())
    vectors = np.load(exported / "vectors.npy")
    emb, meta, tables = _read_like_embedding_reader(tmp_path / "pq", ["id", "n_photos", "group", "title", "price",
                                                                        "tags"])
    assert emb.dtype == np.float32 and emb.shape == vectors.shape
    np.testing.assert_array_equal(emb, vectors)
    assert meta["id"] == ids
    assert meta["n_photos"] == [1 + int(i[1:]) % 3 for i in ids]
    assert meta["title"] == [f"article {i[1:]}" for i in ids] and meta["price"] == [10 + int(i[1:]) for i in ids]
    assert meta["tags"] == [json.dumps(["x", "y"] if int(i[1:]) % 2 else "none") for i in ids]  # mixed: JSON
    assert tables[0].schema.field("embedding").type.value_type == "float"
    assert out["catalog"] and out["columns"][:3] == ["id", "embedding", "n_photos"]


def test_without_catalog_and_refusals(exported, tmp_path):
    manifest = json.loads((exported / "manifest.json").read_text())
    Path(manifest["catalog"]).rename(Path(manifest["catalog"]).with_suffix(".moved"))  # recorded catalogue gone
    out = export_parquet(exported, tmp_path / "pq")
    assert out["columns"] == ["id", "embedding", "n_photos"] and out["catalog"] is None
    with pytest.raises(SetencError, match="not empty"):
        export_parquet(exported, tmp_path / "pq")
    with pytest.raises(SetencError, match="rows_per_file"):
        export_parquet(exported, tmp_path / "other", rows_per_file=0)
    assert not (tmp_path / "other").exists()


def test_script(exported, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "export_parquet.py"), "--index", str(exported),
                           "--out", str(tmp_path / "pq"), "--rows-per-file", "4"], cwd=REPO,
                          env=script_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "7 articles" in proc.stdout and len(list((tmp_path / "pq").glob("*.parquet"))) == 2
