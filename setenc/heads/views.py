"""View tags as ids: what a view-aware head (`setenc.heads.elements.ViewEmbedding`) reads beside the photo vectors.

A catalogue may tag each photo with a view (`front`, `side`, ...: `Article.views`). A view-aware head learns one
vector per tag of its training catalogue plus one for "unknown", and adds the photo's vector before pooling:
photos of the same view are still pooled without order (the set stays a set), but a front and a side photo now
contribute differently — the seed article's ordered case inside one set vector.

Id 0 is "unknown": an untagged photo, a tag the training catalogue never had, or a set whose rows no longer line
up with its tags (a photo that could not be embedded was dropped). Ids 1.. are the vocabulary's tags, sorted.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

UNKNOWN = 0


def view_vocabulary(views: Iterable[Sequence[str] | None]) -> list[str]:
    """The sorted distinct tags of these articles' `views` (untagged articles add nothing)."""
    return sorted({t for tags in views if tags for t in tags})


def view_ids(tags: Sequence[str] | None, rows: int, vocab: Sequence[str], per_photo: int = 1) -> np.ndarray:
    """`(rows,)` int64 ids of one set's rows: each photo's tag id, repeated `per_photo` times (TTA `elements`).

    All unknown when the set has no tags or its rows do not match them (photos dropped at embedding).
    """
    return _ids(tags, rows, _index(vocab), per_photo)


def _index(vocab: Sequence[str]) -> dict[str, int]:
    return {t: k + 1 for k, t in enumerate(vocab)}


def _ids(tags: Sequence[str] | None, rows: int, index: dict[str, int], per_photo: int) -> np.ndarray:
    if not tags or rows != len(tags) * per_photo:
        return np.full(rows, UNKNOWN, np.int64)
    return np.repeat(np.array([index.get(t, UNKNOWN) for t in tags], np.int64), per_photo)


def sets_view_ids(sets: Sequence[np.ndarray], views: Sequence[Sequence[str] | None] | None, vocab: Sequence[str],
                  per_photo: int = 1) -> list[np.ndarray]:
    """`view_ids` of every set; `views=None` = every photo unknown."""
    views = views if views is not None else [None] * len(sets)
    if len(views) != len(sets):
        raise ValueError(f"{len(sets)} sets but {len(views)} view-tag lists: give one (or None) per set")
    index = _index(vocab)  # once, not once per set
    return [_ids(v, len(s), index, per_photo) for s, v in zip(sets, views)]
