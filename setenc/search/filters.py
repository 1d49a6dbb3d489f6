"""Metadata filters: `where={"group": "Shoes", "color": ["blue", "navy"]}` restricts a search to matching articles.

An export stores the filterable metadata of its articles (`metadata.json`, one column per key, row-aligned with
ids.json) when it is written, so filtering never needs the catalogue again. Filterable: the article's `group` and
`partition` and every extra manifest field holding a string, number or boolean (fashion44k: `group`, the
articleType; multiview: `category`, `color`, `source`; cars: `make`, `body`). Titles, ids, photos and list / object
fields are not. Values compare as text: numbers and booleans by their JSON spelling (`3`, `true`).

A `where` is equality on every key given (AND across keys); a list value is any of its values (OR). How the
search applies the matching rows to each index kind is `setenc.search.ann.filtered_search`.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence

import faiss
import numpy as np

from setenc.catalogs import Article
from setenc.plumbing.errors import SetencError

FIELDS = ("group", "partition")  # Article attributes kept; every scalar `meta` field is kept too
Where = Mapping[str, object]  # key -> value or list of values


def text(value: object) -> str | None:
    """A metadata value as compared: strings as they are, numbers and booleans as JSON, anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return None


def article_metadata(article: Article) -> dict[str, str]:
    """The filterable fields of one catalog article."""
    fields = {k: getattr(article, k) for k in FIELDS}
    fields.update(article.meta)
    return {k: v for k, v in ((k, text(v)) for k, v in fields.items()) if v is not None}


class Metadata:
    """Row-aligned metadata columns: `columns[key][row]` is the row's value (None: the article has no such field)."""

    def __init__(self, columns: Mapping[str, Sequence[str | None]]):
        self.columns = {k: list(v) for k, v in columns.items()}
        self._codes: dict[str, tuple[dict[str, int], np.ndarray]] = {}

    @classmethod
    def from_articles(cls, articles: Iterable[Article]) -> "Metadata":
        rows = [article_metadata(a) for a in articles]
        keys = sorted({k for r in rows for k in r})
        return cls({k: [r.get(k) for r in rows] for k in keys})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def keys(self) -> list[str]:
        return sorted(self.columns)

    def select(self, rows: Sequence[int]) -> "Metadata":
        """These rows, in this order."""
        return Metadata({k: [col[r] for r in rows] for k, col in self.columns.items()})

    def concat(self, other: "Metadata", n_self: int, n_other: int) -> "Metadata":
        """Rows of `self` (n_self of them) then rows of `other`; a key one side lacks is None there."""
        keys = sorted(set(self.columns) | set(other.columns))
        return Metadata({k: self.columns.get(k, [None] * n_self) + other.columns.get(k, [None] * n_other)
                         for k in keys})

    def to_json(self) -> str:
        return json.dumps({"columns": self.columns})

    @classmethod
    def from_json(cls, data: str) -> "Metadata":
        return cls(json.loads(data)["columns"])

    def _coded(self, key: str) -> tuple[dict[str, int], np.ndarray]:
        """(value -> code, (N,) int32 codes, -1 = missing) of one column, built on first use."""
        if key not in self._codes:
            col = self.columns[key]
            vocab = {v: i for i, v in enumerate(sorted({v for v in col if v is not None}))}
            self._codes[key] = vocab, np.array([-1 if v is None else vocab[v] for v in col], np.int32)
        return self._codes[key]

    def mask(self, where: Where, n: int) -> np.ndarray:
        """(n,) bool: the rows matching every key of `where`; an unknown key or a value no row has is an error."""
        out = np.ones(n, bool)
        for key, want in where.items():
            if key not in self.columns:
                raise SetencError(f"where: unknown key {key!r}; this export's articles have "
                                  f"{', '.join(self.keys) or 'no filterable metadata'}")
            values = want if isinstance(want, (list, tuple, set, frozenset)) else [want]
            vocab, codes = self._coded(key)
            wanted = [text(v) for v in values]
            unknown = [v for v, t in zip(values, wanted) if t not in vocab]
            if not values or unknown:
                shown = ", ".join(list(vocab)[:10]) + (" ..." if len(vocab) > 10 else "")
                raise SetencError(f"where: no article has {key}={unknown[0] if unknown else '(nothing)'!r}; "
                                  f"{key} values: {shown}")
            out &= np.isin(codes, [vocab[t] for t in wanted])
        return out


def parse_where(items: Iterable[str]) -> dict[str, list[str]]:
    """`["group=Shoes", "group=Sandals", "color=blue"]` -> `{"group": ["Shoes", "Sandals"], "color": ["blue"]}`:
    the command-line and HTTP syntax (a repeated key is any of its values)."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise SetencError(f"where: {item!r} is not KEY=VALUE (e.g. group=Shoes; repeat a key for any of)")
        out.setdefault(key.strip(), []).append(value)
    return out


class RowSelector:
    """A FAISS selector over a row mask (`IDSelectorBitmap`: one bit test a row), keeping its bitmap alive."""

    def __init__(self, mask: np.ndarray):
        self.mask, self.count = mask, int(mask.sum())
        self._bits = np.packbits(mask, bitorder="little")
        self.sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self._bits))

    @property
    def fraction(self) -> float:
        return self.count / max(1, len(self.mask))
