"""The HTTP service in-process (fastapi.testclient): its answers equal the library's, and every bad request is a
4xx with a clear message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the service needs the [serve] extra (pip install 'setenc[serve]')")
pytest.importorskip("httpx", reason="fastapi.testclient needs httpx (the [serve] extra)")

from fastapi.testclient import TestClient  # noqa: E402

from setenc.encoder import SetEncoder  # noqa: E402
from setenc.search.export import export_index  # noqa: E402
from setenc.search.index import SetIndex  # noqa: E402
from setenc.search.service import create_app  # noqa: E402

from test_index import colour_catalog  # noqa: E402


@pytest.fixture
def served(fake_backbone, tmp_path):
    encoder = SetEncoder.parameter_free(fake_backbone)
    export_index(encoder, colour_catalog(tmp_path, 12), tmp_path / "cache", tmp_path / "idx", progress=False)
    index = SetIndex.load(tmp_path / "idx", encoder)
    return TestClient(create_app(index, photo_root=tmp_path, max_photo_bytes=4096, max_photos=3)), index, tmp_path


def upload(path, name=None):
    return ("photos", (name or path.name, path.read_bytes(), "image/png"))


def hits(response) -> list[tuple[str, float]]:
    assert response.status_code == 200, response.text
    return [(h["id"], h["score"]) for h in response.json()["hits"]]


def same(got, want) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_health(served):
    client, index, _ = served
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["articles"] == 12 and body["photo_vectors"] is True
    assert body["backbone"] == "fake:v1"


def test_search_uploads_and_paths_equal_the_library(served):
    client, index, root = served
    photos = [root / "img" / "a4_0.png", root / "img" / "a4_1.png"]
    want = index.search(photos, 5)
    same(hits(client.post("/search", files=[upload(p) for p in photos], data={"k": "5"})), want)
    same(hits(client.post("/search", data={"paths": ["img/a4_0.png", "img/a4_1.png"], "k": "5"})), want)
    reranked = index.search(photos, 3, rerank="chamfer", weight=0.5)
    same(hits(client.post("/search", files=[upload(p) for p in photos],
                          data={"k": "3", "rerank": "chamfer", "weight": "0.5"})), reranked)


def test_similar_equals_the_library(served):
    client, index, _ = served
    same(hits(client.get("/articles/a3/similar?k=4")), index.similar("a3", 4))
    same(hits(client.get("/articles/a3/similar", params={"k": 4, "rerank": "linear"})),
         index.similar("a3", 4, rerank="linear"))


def png_bytes(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("request_kw, status, words", [
    ({"data": {"k": "3"}}, 400, "query set is empty"),
    ({"files": [("photos", ("notes.txt", b"hello, not a photo", "text/plain"))]}, 415, "notes.txt"),
    ({"files": [("photos", ("empty.png", b"", "image/png"))]}, 415, "empty.png: empty file"),
    ({"files": [("photos", ("big.png", png_bytes(200), "image/png"))]}, 413, "big.png: over the limit"),
    ({"data": {"paths": ["img/a0_0.png"] * 4}}, 400, "at most 3"),
    ({"data": {"paths": ["../outside.png"]}}, 400, "outside the photo root"),
    ({"data": {"paths": ["img/none.png"]}}, 404, "no such photo"),
    ({"data": {"paths": ["img/a0_0.png"], "rerank": "nope"}}, 400, "unknown matcher 'nope'"),
    ({"data": {"paths": ["img/a0_0.png"], "rerank": "ordered"}}, 400, "needs view tags"),
    ({"data": {"paths": ["img/a0_0.png"], "k": "0"}}, 400, "k=0 must be between"),
    ({"data": {"paths": ["img/a0_0.png"], "k": "ten"}}, 422, "k"),
])
def test_bad_search_requests_are_4xx_with_a_message(served, request_kw, status, words):
    client, _, _ = served
    r = client.post("/search", **request_kw)
    assert r.status_code == status, r.text
    assert words in str(r.json()["detail"])


def test_bad_similar_requests(served):
    client, _, _ = served
    r = client.get("/articles/zz/similar")
    assert r.status_code == 404 and "'zz' is not in this export" in r.json()["detail"]
    r = client.get("/articles/a1/similar", params={"weight": 3, "rerank": "chamfer"})
    assert r.status_code == 400 and "weight" in r.json()["detail"]


def test_paths_are_off_without_a_photo_root(served):
    _, index, _ = served
    client = TestClient(create_app(index))
    r = client.post("/search", data={"paths": ["img/a0_0.png"]})
    assert r.status_code == 400 and "disabled" in r.json()["detail"]
