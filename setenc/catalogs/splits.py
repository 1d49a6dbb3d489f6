"""Deterministic splits of a catalog by hashed group (or article id): the same split on every machine.

Splits never use the global RNG, so a fold (`seed`) names the same held-out products everywhere, and a run can
tell whether a checkpoint was trained on a catalog from the catalog's fingerprint (`catalog_key`).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from setenc.catalogs.manifest import Catalog
from setenc.plumbing.errors import CatalogError


def catalog_key(catalog: Catalog) -> str:
    """A short fingerprint of a catalog's article ids: tells whether a checkpoint was trained on this catalog."""
    h = hashlib.sha1("\n".join(sorted(catalog.ids)).encode()).hexdigest()[:12]
    return f"{catalog.name}:{h}"


def hash_bucket(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) from a string: splits depend on ids, never on the global RNG."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_catalog(
    catalog: Catalog,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    by: Literal["group", "article"] = "group",
    seed: int = 0,
) -> dict[str, Catalog]:
    """Deterministic train / val / test split by hashing the group (or article id).

    Splitting by group keeps every article of a group on one side, so no product leaks from training into
    evaluation. Articles without a group are split by their own id.
    """
    if by not in ("group", "article"):
        raise CatalogError(f"split_by must be 'group' or 'article', got {by!r}")
    if abs(sum(fractions) - 1.0) > 1e-6 or any(f < 0 for f in fractions):
        raise CatalogError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    edges = (fractions[0], fractions[0] + fractions[1])
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for a in catalog.articles:
        key = a.group if by == "group" and a.group is not None else a.id
        u = hash_bucket(key, seed)
        name = "train" if u < edges[0] else "val" if u < edges[1] else "test"
        parts[name].append(a.id)
    return {k: catalog.subset(v, name=f"{catalog.name}-{k}") for k, v in parts.items()}
