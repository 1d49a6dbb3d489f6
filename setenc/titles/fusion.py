"""Late fusion of photos and titles: one vector per article that one inner-product search scores with both.

The fused vector is `[√w · set_vector, √(1 − w) · title_vector]`; with both parts unit vectors, the inner product
of two fused vectors is `w · cos_photos + (1 − w) · cos_title` — the score fusion `fuse` of the seed article — so a
FAISS index of fused vectors ranks by the fused score without a second search. `w` = 1 is the photo ranking
exactly (the title part is zeros), `w` = 0 the title ranking. A missing modality is a zero part: an article without
a title (or a title-only query, with no photos) contributes nothing on that side, so a photos-only query ranks
the gallery by photos alone and a title-only query by titles alone. `w` is tuned on validation or training
articles (`tune_alpha` / `tune_weight`), never on the scored ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Hashable, Sequence

import numpy as np

from setenc.plumbing.errors import SetencError

if TYPE_CHECKING:
    from setenc.titles.encoders import TextEncoder

ALPHA_GRID = tuple(round(a / 10, 1) for a in range(11))  # 0.0 (text only) … 1.0 (image only)
TUNE_ENTRIES = 1 << 24  # (queries × gallery) score entries tuning holds at once: the queries are sampled to fit


def check_weight(alpha: float) -> float:
    """The photo weight, in [0, 1] (1 = photos only, 0 = title only)."""
    if not 0.0 <= alpha <= 1.0:
        raise SetencError(f"fusion weight alpha={alpha} must be in [0, 1] (1 = image only, 0 = text only)")
    return float(alpha)


def fuse(image_scores: np.ndarray, text_scores: np.ndarray, alpha: float) -> np.ndarray:
    """alpha · image + (1 − alpha) · text: alpha = 1 is image only, alpha = 0 text only."""
    check_weight(alpha)
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
    from setenc.evaluation.metrics import retrieval_metrics  # here: evaluation imports the encoder, which imports us

    rows = [{"alpha": a, **retrieval_metrics(fuse(image_scores, text_scores, a), q_labels, g_labels, ignore=ignore)}
            for a in grid]
    best = max(rows, key=lambda r: (r["map@r"], r["recall@1"]))
    return best["alpha"], rows


def fuse_vectors(set_vectors: np.ndarray, title_vectors: np.ndarray, weight: float) -> np.ndarray:
    """`(N, E)` set vectors and `(N, T)` title vectors (zero rows where a side is missing) -> `(N, E + T)` float32.

    Not renormalised: an article missing one side keeps the other side's weight, so its scores stay on the
    same scale as everyone else's (its missing side simply scores 0).
    """
    w = check_weight(weight)
    set_vectors, title_vectors = np.asarray(set_vectors, np.float32), np.asarray(title_vectors, np.float32)
    if len(set_vectors) != len(title_vectors):
        raise ValueError(f"{len(set_vectors)} set vectors and {len(title_vectors)} title vectors must match")
    return np.hstack([np.float32(np.sqrt(w)) * set_vectors, np.float32(np.sqrt(1.0 - w)) * title_vectors])


def tune_weight(set_q: np.ndarray, set_g: np.ndarray, title_q: np.ndarray, title_g: np.ndarray,
                q_labels: Sequence[Hashable], g_labels: Sequence[Hashable], exclude: np.ndarray | None = None,
                grid: Sequence[float] = ALPHA_GRID, seed: int = 0) -> tuple[float, list[dict]]:
    """The photo weight `w` with the best MAP@R on these (validation / training) queries, as `tune_alpha`.

    The fused inner product is the fused score, so it tunes on the two (Q, G) cosine matrices; queries beyond
    `TUNE_ENTRIES / G` are sampled (seeded) so tuning on a large training split stays in bounded memory.
    Args:
        exclude: gallery position never to retrieve per query (leave-one-out), -1 for none.
    """
    keep = np.arange(len(set_q))
    cap = max(1, TUNE_ENTRIES // max(1, len(set_g)))
    if len(keep) > cap:
        keep = np.sort(np.random.default_rng(seed).permutation(len(keep))[:cap])
    ignore = None
    if exclude is not None:
        ex = np.asarray(exclude)[keep]
        ignore = np.zeros((len(keep), len(set_g)), bool)
        ignore[np.flatnonzero(ex >= 0), ex[ex >= 0]] = True
    image = np.asarray(set_q)[keep] @ np.asarray(set_g).T
    text = np.asarray(title_q)[keep] @ np.asarray(title_g).T
    labels = [q_labels[i] for i in keep]
    return tune_alpha(image, text, labels, g_labels, ignore, grid)


class Fusion:
    """A tuned late fusion: the photo weight and the title encoder (built lazily from its spec when loaded).

    Args:
        weight: `w` of the photo part (1 = photos only).
        text: the fitted `TextEncoder`, or its `spec()` (from a checkpoint) to build on first use.
    """

    def __init__(self, weight: float, text: "TextEncoder | dict", metrics: dict | None = None):
        self.weight = check_weight(weight)
        self._text = None if isinstance(text, dict) else text
        self._spec = dict(text) if isinstance(text, dict) else None
        self.metrics = dict(metrics or {})  # what tuning measured, for the record

    @property
    def text(self) -> "TextEncoder":
        """The title encoder, rebuilt from the checkpoint's spec on first use (a neural one loads its weights)."""
        if self._text is None:
            from setenc.titles.encoders import text_encoder_from_spec

            self._text = text_encoder_from_spec(self._spec)
        return self._text

    @property
    def text_id(self) -> str:
        return self._spec["id"] if self._text is None else self._text.id

    def state(self) -> dict:
        """Plain values and tensors: `SetEncoder.state()` stores it under `"fusion"`."""
        spec = self._spec if self._text is None else self._text.spec()
        return {"weight": self.weight, "text": spec, "metrics": self.metrics}

    @classmethod
    def from_state(cls, state: dict) -> "Fusion":
        return cls(state["weight"], state["text"], state.get("metrics"))

    def combine(self, set_vectors: np.ndarray, title_vectors: np.ndarray) -> np.ndarray:
        """`fuse_vectors` with this fusion's weight."""
        return fuse_vectors(set_vectors, title_vectors, self.weight)

    def __repr__(self) -> str:
        return f"Fusion(weight={self.weight}, text={self.text_id!r})"
