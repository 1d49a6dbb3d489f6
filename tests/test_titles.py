"""Title vectors through the embedding cache: keyed by encoder id + text hash, each distinct title encoded once."""

from __future__ import annotations

import hashlib

import numpy as np

from setenc.titles.encoders import TfidfTextEncoder
from setenc.titles.vectors import title_cache, title_key, title_vectors

TITLES = ["Nike Men Running Shoes", "Nike Men Running Shoes", "", None, "Titan Steel Watch", "Puma Casual Sneaker"]


class Counting(TfidfTextEncoder):
    """TF-IDF that counts the titles it is asked to encode."""

    def __init__(self):
        super().__init__()
        self.encoded: list[str] = []

    def encode(self, titles):
        self.encoded += list(titles)
        return super().encode(titles)


def test_title_key_is_the_hash_of_the_text():
    assert title_key("Blue Shirt") == hashlib.blake2b(b"Blue Shirt", digest_size=16).hexdigest()
    assert title_key("Blue Shirt") != title_key("blue shirt") and len({title_key(t) for t in ("a", "b")}) == 2


def test_each_distinct_title_is_encoded_once_and_read_back(tmp_path):
    enc = Counting().fit([t for t in TITLES if t])
    x = title_vectors(TITLES, enc, tmp_path)
    np.testing.assert_allclose(x, enc.encode(TITLES), atol=1e-6)
    assert sorted(enc.encoded[:3]) == ["Nike Men Running Shoes", "Puma Casual Sneaker", "Titan Steel Watch"]
    assert not x[2].any() and not x[3].any()  # empty / missing: zero rows, never stored
    cache = title_cache(enc, tmp_path)
    assert len(cache) == 3 and cache.dir.name == f"text-{enc.id}".replace(":", "_")
    enc.encoded.clear()
    again = title_vectors(TITLES + ["Fastrack Blue Watch"], enc, tmp_path)
    assert enc.encoded == ["Fastrack Blue Watch"]  # only what the cache lacked
    np.testing.assert_array_equal(again[: len(TITLES)], x)


def test_another_encoder_id_is_another_cache(tmp_path):
    a = TfidfTextEncoder().fit(["red shoe", "blue shirt"])
    b = TfidfTextEncoder().fit(["red shoe", "blue shirt", "green bag"])
    title_vectors(["red shoe"], a, tmp_path)
    title_vectors(["red shoe"], b, tmp_path)
    assert a.id != b.id and title_cache(a, tmp_path).dir != title_cache(b, tmp_path).dir
    assert title_vectors([None, ""], a, tmp_path).shape == (2, a.dim)
