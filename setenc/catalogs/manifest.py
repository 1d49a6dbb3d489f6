"""The article catalog: a JSONL manifest, one article (an unordered set of photos) a line.

```
{"id": "a17", "images": ["img/a17_0.jpg", ...], "group": "boot-chelsea-brown", "title": "...", "views": [...]}
```
`group` defines similarity (same group = positive pair); an optional `pairs.csv` (`a,b`) beside the manifest
gives explicit positive pairs; `partition` (`query` / `gallery`) fixes an evaluation protocol. Any other field
is kept in `Article.meta`. Image paths are relative to the manifest and resolved to absolute paths on load.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from setenc.plumbing.errors import CatalogError
from setenc.plumbing.paths import absolute

_KNOWN = ("id", "images", "group", "title", "views", "partition")
PARTITIONS = ("query", "gallery")


@dataclass(frozen=True)
class Article:
    """One article: an id, its photos (absolute paths) and optional labels."""

    id: str
    images: tuple[Path, ...]
    group: str | None = None
    title: str | None = None
    views: tuple[str, ...] | None = None
    partition: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self, root: Path) -> dict:
        """The manifest line, with image paths made relative to `root` where possible."""
        out: dict = {"id": self.id, "images": [_relpath(p, root) for p in self.images]}
        for key in ("group", "title", "views", "partition"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if key == "views" else value
        out.update(self.meta)
        return out


@dataclass
class Catalog:
    """A list of articles plus optional explicit positive pairs; `root` is the manifest's folder."""

    articles: list[Article]
    root: Path
    pairs: list[tuple[str, str]] | None = None
    name: str = "catalog"

    def __len__(self) -> int:
        return len(self.articles)

    def __iter__(self):
        return iter(self.articles)

    def __getitem__(self, i: int) -> Article:
        return self.articles[i]

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.articles]

    @property
    def image_paths(self) -> list[Path]:
        """Every photo once, in catalog order (articles may share a photo)."""
        return list(dict.fromkeys(p for a in self.articles for p in a.images))

    def subset(self, ids: Iterable[str], name: str | None = None) -> "Catalog":
        """The articles with these ids (catalog order kept); pairs restricted to them."""
        keep = set(ids)
        pairs = None if self.pairs is None else [p for p in self.pairs if p[0] in keep and p[1] in keep]
        return Catalog([a for a in self.articles if a.id in keep], self.root, pairs, name or self.name)

    def with_articles(self, articles: list[Article]) -> "Catalog":
        return replace(self, articles=articles)


def _relpath(p: Path, root: Path) -> str:
    try:
        return os.path.relpath(p, root)
    except ValueError:  # different drive on Windows
        return str(p)


def _parse_line(obj: object, where: str, root: Path) -> Article:
    if not isinstance(obj, dict):
        raise CatalogError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    aid = obj.get("id")
    if not isinstance(aid, (str, int)) or str(aid) == "":
        raise CatalogError(f"{where}: missing or empty 'id' (a string naming the article)")
    aid = str(aid)
    images = obj.get("images")
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise CatalogError(f"{where}: article {aid!r}: 'images' must be a list of photo paths")
    for p in images:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:  # a JSON "\udcXX" escape: a file name whose bytes are not UTF-8
            raise CatalogError(f"{where}: article {aid!r}: photo path {p!r} is not valid UTF-8; rename the file to "
                               "a UTF-8 name (e.g. with convmv) and write that name in the manifest") from None
    if not images:
        raise CatalogError(f"{where}: article {aid!r} has no photos ('images' is empty); remove it or add photos")
    views = obj.get("views")
    if views is not None:
        if not isinstance(views, list) or len(views) != len(images):
            n = len(views) if isinstance(views, list) else "not a list"
            raise CatalogError(
                f"{where}: article {aid!r}: 'views' ({n}) must list one tag per photo ({len(images)} photos)"
            )
        views = tuple(str(v) for v in views)
    partition = obj.get("partition")
    if partition is not None and partition not in PARTITIONS:
        raise CatalogError(f"{where}: article {aid!r}: 'partition' must be one of {PARTITIONS}, got {partition!r}")
    group, title = obj.get("group"), obj.get("title")
    return Article(
        id=aid,
        images=tuple(absolute(root / p) for p in images),
        group=None if group is None else str(group),
        title=None if title is None else str(title),
        views=views,
        partition=partition,
        meta={k: v for k, v in obj.items() if k not in _KNOWN},
    )


def iter_jsonl(lines: Iterable[bytes | str], name: str | os.PathLike) -> Iterator[tuple[str, int, object]]:
    """`(where, lineno, object)` for each non-blank JSON line; bad UTF-8 or JSON is an error naming the line."""
    for lineno, raw in enumerate(lines, 1):
        where = f"{name}:{lineno}"
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise CatalogError(f"{where}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save the "
                                   "manifest as UTF-8, renaming photos whose file names are not UTF-8") from None
        if not raw.strip():
            continue
        try:
            yield where, lineno, json.loads(raw.rstrip("\r\n"))  # a newline would move errors to line 2
        except json.JSONDecodeError as e:
            raise CatalogError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None


def load_catalog(path: str | os.PathLike, check_files: bool = True, pairs: str | os.PathLike | None = None) -> Catalog:
    """Read and validate a manifest.

    Args:
        path: the JSONL manifest, or a folder holding `catalog.jsonl`.
        check_files: also check that every photo exists (a missing one is an error naming article and file).
        pairs: an explicit `pairs.csv`; by default the one beside the manifest, if any.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "catalog.jsonl"
    if not path.is_file():
        raise CatalogError(f"{path}: no catalog manifest here (expected a JSONL file or a folder with catalog.jsonl)")
    root = absolute(path.parent)
    articles: list[Article] = []
    seen: dict[str, int] = {}
    with open(path, "rb") as f:
        for where, lineno, obj in iter_jsonl(f, path):
            art = _parse_line(obj, where, root)
            if art.id in seen:
                raise CatalogError(f"{where}: duplicate article id {art.id!r} (first on line {seen[art.id]})")
            seen[art.id] = lineno
            if check_files:
                for p in art.images:
                    if not p.is_file():
                        raise CatalogError(f"{where}: article {art.id!r}: photo not found or not a file: {p}")
            articles.append(art)
    if not articles:
        raise CatalogError(f"{path}: the manifest lists no articles")
    pairs_path = Path(pairs) if pairs is not None else path.with_name("pairs.csv")
    pair_list = _load_pairs(pairs_path, seen) if pairs is not None or pairs_path.is_file() else None
    return Catalog(articles, root, pair_list, name=root.name)


def _load_pairs(path: Path, ids: dict[str, int]) -> list[tuple[str, str]]:
    if not path.is_file():
        raise CatalogError(f"{path}: pairs file not found")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or (lineno == 1 and [c.strip() for c in row[:2]] == ["a", "b"]):
                continue
            if len(row) < 2:
                raise CatalogError(f"{path}:{lineno}: expected two article ids 'a,b', got {row!r}")
            a, b = row[0].strip(), row[1].strip()
            for x in (a, b):
                if x not in ids:
                    raise CatalogError(f"{path}:{lineno}: pair names unknown article {x!r} (not in the manifest)")
            out.append((a, b))
    return out


def write_catalog(catalog: Catalog, path: str | os.PathLike) -> Path:
    """Write the manifest (and pairs.csv when the catalog has pairs) atomically; paths relative to its folder."""
    path = Path(path)
    if path.suffix != ".jsonl":
        path = path / "catalog.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = absolute(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for a in catalog.articles:
            f.write(json.dumps(a.to_json(root), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    pairs_path = path.with_name("pairs.csv")
    if catalog.pairs:
        tmp = pairs_path.with_name("pairs.csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["a", "b"])
            w.writerows(catalog.pairs)
        os.replace(tmp, pairs_path)
    elif pairs_path.exists():
        pairs_path.unlink()  # a stale pairs file would be read back as this catalog's pairs
    return path
