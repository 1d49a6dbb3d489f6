"""Title text embeddings and score fusion: the seed article's "alternative path" of adding the product title.

No model hub is reachable offline, so the default encoder is TF-IDF over word 1–2-grams and character 2–4-grams
(scikit-learn): real, honest, and strong on catalogue titles, which repeat brand and type words. A neural text
tower (CLIP's `CLIPTextModelWithProjection`, DESIGN.md) fits the same two-method interface: `fit(titles)` then
`encode(titles) -> (N, E)` unit vectors, so inner product = cosine, as for photo vectors.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

from setenc.errors import SetencError
from setenc.registry import Registry
from setenc.evaluation.metrics import retrieval_metrics

ALPHA_GRID = tuple(round(a / 10, 1) for a in range(11))  # 0.0 (text only) … 1.0 (image only)


class TextEncoder:
    """Titles -> L2-normalised vectors; `fit` learns whatever the encoder needs from the catalogue's titles."""

    name = ""

    def fit(self, titles: Sequence[str]) -> "TextEncoder":
        return self

    def encode(self, titles: Sequence[str]) -> np.ndarray:
        """(N, E) float32 unit vectors; an empty title gives a zero vector (cosine 0 with everything)."""
        raise NotImplementedError


class TfidfTextEncoder(TextEncoder):
    """TF-IDF of word 1–2-grams and character 2–4-grams (within word boundaries), concatenated and L2-normalised.

    Character n-grams match abbreviations and truncations that catalogue titles are full of ("Sho" / "Shoes").
    """

    name = "tfidf"

    def __init__(self, word_weight: float = 0.5, min_df: int = 1):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.word_weight = word_weight
        self.word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), lowercase=True, min_df=min_df,
                                    sublinear_tf=True)
        self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True, min_df=min_df,
                                    sublinear_tf=True)
        self._fitted = False

    def fit(self, titles: Sequence[str]) -> "TfidfTextEncoder":
        titles = _clean(titles)
        if not any(t.strip() for t in titles):
            raise SetencError("TfidfTextEncoder.fit: every title is empty; give the catalogue's `title` field")
        self.word.fit(titles)
        self.char.fit(titles)
        self._fitted = True
        return self

    def encode(self, titles: Sequence[str]) -> np.ndarray:
        if not self._fitted:
            raise SetencError("TfidfTextEncoder.encode before fit: call .fit(titles) on the catalogue's titles first")
        titles = _clean(titles)
        w = self.word.transform(titles).toarray()  # (N, Vw) rows of unit length (or zero)
        c = self.char.transform(titles).toarray()  # (N, Vc)
        x = np.hstack([np.sqrt(self.word_weight) * w, np.sqrt(1 - self.word_weight) * c]).astype(np.float32)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")
TEXT_ENCODERS.register("tfidf", TfidfTextEncoder)


def list_text_encoders() -> list[str]:
    """Names accepted by `create_text_encoder`."""
    return TEXT_ENCODERS.names()


def create_text_encoder(name: str = "tfidf", **kw) -> TextEncoder:
    """A text encoder by name (offline: `tfidf`)."""
    return TEXT_ENCODERS.create(name, **kw)


def fuse(image_scores: np.ndarray, text_scores: np.ndarray, alpha: float) -> np.ndarray:
    """alpha · image + (1 − alpha) · text: alpha = 1 is image only, alpha = 0 text only."""
    if not 0.0 <= alpha <= 1.0:
        raise SetencError(f"fusion weight alpha={alpha} must be in [0, 1] (1 = image only, 0 = text only)")
    image_scores, text_scores = np.asarray(image_scores), np.asarray(text_scores)
    if image_scores.shape != text_scores.shape:
        raise ValueError(f"image scores {image_scores.shape} and text scores {text_scores.shape} must match")
    return alpha * image_scores + (1.0 - alpha) * text_scores


def tune_alpha(image_scores: np.ndarray, text_scores: np.ndarray, q_labels: Sequence[Hashable],
               g_labels: Sequence[Hashable], ignore: np.ndarray | None = None,
               grid: Sequence[float] = ALPHA_GRID) -> tuple[float, list[dict]]:
    """The fusion weight with the best MAP@R (then Recall@1, then grid order) on validation queries.

    Returns:
        `(best_alpha, rows)`, a row per grid point: `{"alpha", **retrieval_metrics}`.
    """
    rows = [{"alpha": a, **retrieval_metrics(fuse(image_scores, text_scores, a), q_labels, g_labels, ignore=ignore)}
            for a in grid]
    best = max(rows, key=lambda r: (r["map@r"], r["recall@1"]))
    return best["alpha"], rows


def _clean(titles: Sequence[str | None]) -> list[str]:
    return ["" if t is None else str(t) for t in titles]
