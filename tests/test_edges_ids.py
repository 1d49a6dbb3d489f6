"""Issue 26: ids are opaque strings everywhere. The README's folder adapter writes `group/article` ids
(`Banana/Banana-a`); they work in the CLI, Python, query files, Parquet and the HTTP service, and the service's and
search.py's other edges (a bad query photo, `k=abc`, long ids, no titles) read as plainly as the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, script_env, write_photos

LONG = "Banana/Banana-organic-fairtrade-bunch-xl"  # over the old 24-character id column


def run(env, script: str, *args, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> dict:
    """A `ROOT/<group>/<article>/<photo>` collection through make_catalog.py folder, exported by export.py."""
    root = tmp_path_factory.mktemp("ids")
    env = script_env(root / "cache")
    for k, article in enumerate(["Banana/Banana-a", "Banana/Banana-b", LONG, "Apple/Apple-a", "Apple/Apple-b"]):
        write_photos(root / "photos" / article, 2, seed=k, size=20)
    run(env, "make_catalog.py", "folder", root / "photos", "--out", root / "cat")
    run(env, "export.py", "--catalog", root / "cat" / "catalog.jsonl", "--out", root / "export")
    bad = root / "not-a-photo.jpg"
    bad.write_text("this is text")
    return {"env": env, "export": root / "export", "root": root, "bad": bad}


def test_search_cli_takes_a_slashed_id_and_aligns_long_ids_without_an_empty_title_column(shop):
    out = run(shop["env"], "search.py", shop["export"], "--id", "Banana/Banana-a", "-k", "4").stdout
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    table = lines[header:header + 5]
    assert "title" not in table[0] and LONG in out and "Banana/Banana-a " not in "".join(table[1:])
    assert len({line.rindex(".") for line in table[1:]}) == 1, table  # the score column lines up


def test_a_bad_query_photo_is_named_as_a_query_photo_not_a_catalogue_entry(shop):
    proc = run(shop["env"], "search.py", shop["export"], shop["bad"], ok=False)
    assert proc.returncode == 2 and "a query photo must be" in proc.stderr and "catalog" not in proc.stderr, proc.stderr


def test_query_file_python_and_parquet_keep_slashed_ids(shop, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"id": "Banana/Banana-a", "qid": 1}) + "\n")
    out = run(shop["env"], "search.py", shop["export"], "--queries", queries, "-k", "2").stdout
    hits = [h["id"] for h in json.loads(out.splitlines()[-1])["hits"]]
    assert len(hits) == 2 and "Banana/Banana-a" not in hits

    from setenc.search.index import SetIndex

    index = SetIndex.load(shop["export"])
    assert [i for i, _ in index.similar("Banana/Banana-a", k=2)] == hits
    pq = pytest.importorskip("pyarrow.parquet")
    from setenc.search.parquet import export_parquet

    export_parquet(shop["export"], tmp_path / "pq")
    ids = pq.read_table(tmp_path / "pq").column("id").to_pylist()
    assert "Banana/Banana-a" in ids and LONG in ids


@pytest.fixture(scope="module")
def client(shop):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from setenc.search.index import SetIndex
    from setenc.search.service import create_app

    return TestClient(create_app(SetIndex.load(shop["export"])))


@pytest.mark.parametrize("path", ["Banana/Banana-a", "Banana%2FBanana-a"])
def test_service_similar_takes_slashed_ids(client, path):
    r = client.get(f"/articles/{path}/similar?k=2")
    assert r.status_code == 200, r.text
    assert len(r.json()["hits"]) == 2 and "Banana/Banana-a" not in [h["id"] for h in r.json()["hits"]]
    assert client.get("/articles/Banana/nope/similar").status_code == 404


def test_service_malformed_field_is_one_plain_detail(client):
    r = client.get("/articles/Banana/Banana-a/similar?k=abc")
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and "k='abc'" in r.json()["detail"], r.text


def test_service_bad_upload_speaks_of_a_query_photo(client, shop):
    r = client.post("/search", files=[("photos", ("q.jpg", Path(shop["bad"]).read_bytes(), "image/jpeg"))])
    assert r.status_code == 415 and "q.jpg" in r.json()["detail"] and "catalog" not in r.json()["detail"], r.text
