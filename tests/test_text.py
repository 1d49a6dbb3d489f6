"""Title text embeddings and score fusion: unit vectors, identical titles at cosine 1, fusion end points."""

from __future__ import annotations

import numpy as np
import pytest

from setenc.errors import SetencError
from setenc.text import (ALPHA_GRID, TfidfTextEncoder, create_text_encoder, fuse, list_text_encoders,
                         tune_alpha)

TITLES = ["Nike Men Running Sports Shoes", "Nike Men Running Sports Shoes", "Clarks Men Formal Leather Shoes",
          "Puma Women Casual Sneaker", "", "Red Chief Men Brown Formal Shoe"]


def test_tfidf_unit_norm_and_identical_titles():
    enc = create_text_encoder("tfidf").fit(TITLES)
    x = enc.encode(TITLES)
    norms = np.linalg.norm(x, axis=1)
    assert x.dtype == np.float32 and x.shape[0] == len(TITLES)
    np.testing.assert_allclose(norms[[0, 1, 2, 3, 5]], 1.0, atol=1e-5)
    assert norms[4] == 0.0  # an empty title has no evidence: cosine 0 with everything, not NaN
    sims = x @ x.T
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert sims[2, 5] > sims[2, 3]  # "Formal Shoe(s)" shares words and character n-grams; the sneaker does not
    assert np.isfinite(sims).all()


def test_tfidf_character_ngrams_match_truncated_words():
    enc = TfidfTextEncoder(word_weight=0.0).fit(["Temp Grey Sho", "Grey Shoes", "Blue Watch"])
    x = enc.encode(["Temp Grey Sho", "Grey Shoes", "Blue Watch"])
    assert x[0] @ x[1] > x[0] @ x[2]


def test_tfidf_errors():
    with pytest.raises(SetencError, match="fit"):
        TfidfTextEncoder().encode(["a"])
    with pytest.raises(SetencError, match="empty"):
        TfidfTextEncoder().fit(["", None])
    with pytest.raises(SetencError, match="tfidf"):
        create_text_encoder("nope")
    assert list_text_encoders() == ["tfidf"]


def test_fuse_end_points_and_mix():
    rng = np.random.default_rng(0)
    img, txt = rng.random((3, 4)), rng.random((3, 4))
    np.testing.assert_array_equal(fuse(img, txt, 1.0), img)
    np.testing.assert_array_equal(fuse(img, txt, 0.0), txt)
    np.testing.assert_allclose(fuse(img, txt, 0.25), 0.25 * img + 0.75 * txt)
    with pytest.raises(SetencError, match="alpha"):
        fuse(img, txt, 1.5)
    with pytest.raises(ValueError):
        fuse(img, txt[:2], 0.5)


def test_tune_alpha_picks_the_informative_side():
    # 4 queries against 4 gallery items, query q's positive is gallery q: text knows, the image scores are noise
    labels = ["a", "b", "c", "d"]
    text = np.eye(4)
    image = np.random.default_rng(1).random((4, 4)) * 0.1
    image[np.arange(4), (np.arange(4) + 1) % 4] = 1.0  # the image ranks a wrong item first, every time
    alpha, rows = tune_alpha(image, text, labels, labels)
    assert alpha == 0.0 and len(rows) == len(ALPHA_GRID)
    assert rows[0]["recall@1"] == 1.0 and rows[-1]["recall@1"] == 0.0
