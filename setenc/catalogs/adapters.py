"""Catalogs from the layouts real photo collections come in; photos stay where they are (absolute paths).

Each adapter reads only the dataset's own list files, checks each row and raises `CatalogError` naming file and
line for a malformed one. Photo existence is checked later by `load_catalog` (or here where the format needs it).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Literal, Sequence

from setenc.catalogs.manifest import Article, Catalog, iter_jsonl
from setenc.plumbing.errors import CatalogError
from setenc.plumbing.paths import absolute

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
INSHOP_VIEWS = ("front", "side", "back", "full", "additional", "flat")


def _open_text(path: Path) -> io.TextIOBase:
    """A text file, gunzipped when it is gzip (by content, not name)."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rt", encoding="utf-8", newline="") if gz else open(path, encoding="utf-8", newline="")


def _need_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CatalogError(f"{path}: {what} not found")
    return path


# a folder per article


def _photos(folder: Path) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()
                        and not p.name.startswith(".")))


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def from_folder(root: str | os.PathLike, group_from_parent: bool = True) -> Catalog:
    """`root/<article>/<photo>` (one article per folder) or `root/<group>/<article>/<photo>`.

    In the two-level layout the article id is `<group>/<article>` and, with `group_from_parent`, the group is the
    parent folder's name. Photos are .jpg / .jpeg / .png / .webp files, in name order.
    """
    root = absolute(root)
    layout = "expected root/<article>/<photo>.jpg or root/<group>/<article>/<photo>.jpg"
    if not root.is_dir():
        raise CatalogError(f"{root}: not a folder; {layout}")
    if _photos(root):
        log.warning("%s: photos directly in this folder are ignored (%s)", root, layout)
    articles = []
    for folder in _subdirs(root):
        photos = _photos(folder)
        if photos:
            articles.append(Article(id=folder.name, images=photos))
            continue
        for sub in _subdirs(folder):
            if photos := _photos(sub):
                group = folder.name if group_from_parent else None
                articles.append(Article(id=f"{folder.name}/{sub.name}", images=photos, group=group))
    if not articles:
        raise CatalogError(f"{root}: no article folders with photos ({', '.join(IMAGE_EXTS)}) found; {layout}")
    return Catalog(articles, root, name=root.name)


# Stanford Online Products


def _rows(path: Path, header: str) -> Iterator[tuple[int, list[str]]]:
    """Whitespace-separated rows after a header line that must read `header`; yields (line number, fields)."""
    with _open_text(path) as f:
        first = f.readline().split()
        if first != header.split():
            raise CatalogError(f"{path}:1: expected the header {header!r}, got {' '.join(first)!r}")
        for lineno, line in enumerate(f, 2):
            if line.strip():
                yield lineno, line.split()


def from_sop(root: str | os.PathLike, split: Literal["train", "test", "all"] = "train") -> Catalog:
    """Stanford Online Products: `Ebay_train.txt` / `Ebay_test.txt` beside the `<category>_final/` photo folders.

    One article per product (`class_id`), its photos the set. SOP has one listing per product, so articles have
    no `group`: training pairs are two disjoint subsets of one article's photos, and the evaluation protocol to
    use is self retrieval. The super-class (bicycle, chair, ...) goes into meta as `category` (its name, from the
    photo folder) and `super_class_id`, for a coarse category protocol; `subset` says train or test.
    """
    root = absolute(root)
    names = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}
    if split not in names:
        raise CatalogError(f"from_sop: split must be 'train', 'test' or 'all', got {split!r}")
    photos: dict[str, list[Path]] = defaultdict(list)
    meta: dict[str, dict] = {}
    for subset in names[split]:
        what = "Stanford Online Products list file (from Stanford_Online_Products.zip)"
        path = _need_file(root / f"Ebay_{subset}.txt", what)
        for lineno, row in _rows(path, "image_id class_id super_class_id path"):
            if len(row) != 4 or not (row[0].isdigit() and row[1].isdigit() and row[2].isdigit()):
                raise CatalogError(f"{path}:{lineno}: expected 'image_id class_id super_class_id path', got {row!r}")
            _, cls, sup, rel = row
            photos[cls].append(root / rel)
            category = rel.split("/")[0].removesuffix("_final")
            meta.setdefault(cls, {"category": category, "super_class_id": int(sup), "subset": subset})
    if not photos:
        raise CatalogError(f"{root}: the SOP list files list no photos")
    return Catalog([Article(id=c, images=tuple(p), meta=meta[c]) for c, p in photos.items()], root, name="sop")


# DeepFashion In-shop


def _inshop_views(images: Sequence[str]) -> tuple[str, ...] | None:
    """In-shop names end in the view (`02_1_front.jpg`); None unless every photo has one."""
    views = tuple(Path(p).stem.rsplit("_", 1)[-1] for p in images)
    return views if all(v in INSHOP_VIEWS for v in views) else None


def from_inshop(root: str | os.PathLike) -> Catalog:
    """DeepFashion In-shop: `list_eval_partition.txt` (a count line, a header, `image_name item_id status` rows).

    Train items become one article each. For the retrieval protocol each test item becomes two articles in one
    group (= item_id): `<item>-query` (its query photos, partition `query`) and `<item>-gallery` (its gallery
    photos, partition `gallery`). Views come from the photo names; `category` and `gender` from their folders.
    """
    root = absolute(root)
    path = _need_file(root / "list_eval_partition.txt", "DeepFashion In-shop list file (Eval/list_eval_partition.txt)")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)  # (item, status) -> photo names
    with _open_text(path) as f:
        count = f.readline().strip()
        if not count.isdigit():
            raise CatalogError(f"{path}:1: expected the number of photos, got {count!r}")
        header = f.readline().split()
        if header != ["image_name", "item_id", "evaluation_status"]:
            raise CatalogError(f"{path}:2: expected the header 'image_name item_id evaluation_status', got {header}")
        n = 0
        for lineno, line in enumerate(f, 3):
            if not line.strip():
                continue
            row = line.split()
            if len(row) != 3 or row[2] not in ("train", "query", "gallery"):
                raise CatalogError(f"{path}:{lineno}: expected 'image_name item_id train|query|gallery', got {row!r}")
            groups[(row[1], row[2])].append(row[0])
            n += 1
    if n != int(count):
        raise CatalogError(f"{path}: the first line says {count} photos but {n} are listed; the file is damaged")
    articles = []
    for (item, status), names in groups.items():
        parts = Path(names[0]).parts
        meta = {"category": parts[-3], "gender": parts[-4]} if len(parts) >= 4 else {}
        articles.append(Article(
            id=item if status == "train" else f"{item}-{status}", images=tuple(root / p for p in names), group=item,
            views=_inshop_views(names), partition=None if status == "train" else status, meta=meta,
        ))
    return Catalog(articles, root, name="inshop")


# Amazon Berkeley Objects


def _english(values: object) -> str | None:
    """ABO's language-tagged lists: the first `en_*` value, else the first value."""
    if not isinstance(values, list):
        return None
    tagged = [v for v in values if isinstance(v, dict) and "value" in v]
    english = [v for v in tagged if str(v.get("language_tag", "")).startswith("en_")]
    return str((english or tagged)[0]["value"]) if tagged else None


def _abo_images(images_csv: Path, images_root: Path) -> dict[str, Path]:
    with _open_text(_need_file(images_csv, "ABO images.csv(.gz)")) as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if "image_id" not in header or "path" not in header:
            raise CatalogError(f"{images_csv}:1: expected a header with 'image_id' and 'path', got {header}")
        i, j = header.index("image_id"), header.index("path")
        out = {}
        for lineno, row in enumerate(reader, 2):
            if len(row) != len(header):
                raise CatalogError(f"{images_csv}:{lineno}: expected {len(header)} columns ({','.join(header)})")
            out[row[i]] = images_root / row[j]
    return out


def from_abo(
    listings_path: str | os.PathLike, images_csv: str | os.PathLike, images_root: str | os.PathLike
) -> Catalog:
    """Amazon Berkeley Objects: listings JSON lines (a file or a folder of `*.json(.gz)`) + `images.csv(.gz)`.

    One article per listing (`item_id`), its photos `main_image_id` then `other_image_id`; group = the first
    `product_type`; title = the English `item_name`; `brand` and `color` (English) in meta. Images missing from
    images.csv and listings without any photo are skipped and counted in a logged warning.
    """
    listings_path, images_root = Path(listings_path), absolute(images_root)
    if listings_path.is_dir():
        files = sorted(p for p in listings_path.iterdir() if p.name.endswith((".json", ".json.gz")))
    else:
        files = [_need_file(listings_path, "ABO listings file")]
    if not files:
        raise CatalogError(f"{listings_path}: no listings_*.json(.gz) files in this folder")
    paths = _abo_images(Path(images_csv), images_root)
    articles: dict[str, Article] = {}
    missing = photoless = duplicates = 0
    for file in files:
        with _open_text(file) as f:
            for where, _, obj in iter_jsonl(f, file):
                if not isinstance(obj, dict) or not obj.get("item_id"):
                    raise CatalogError(f"{where}: a listing needs an 'item_id'")
                item = str(obj["item_id"])
                if item in articles:
                    duplicates += 1
                    continue
                ids = [obj.get("main_image_id"), *(obj.get("other_image_id") or [])]
                ids = list(dict.fromkeys(i for i in ids if i))
                images = tuple(paths[i] for i in ids if i in paths)
                missing += len(ids) - len(images)
                if not images:
                    photoless += 1
                    continue
                meta = {k: v for k in ("brand", "color") if (v := _english(obj.get(k))) is not None}
                group = _english(obj.get("product_type"))  # [{"value": "SHOES"}]: no language tag
                articles[item] = Article(id=item, images=images, group=group, title=_english(obj.get("item_name")),
                                         meta=meta)
    if missing or photoless or duplicates:
        log.warning("%s: skipped %d image ids not in %s, %d listings without photos, %d repeated item_ids",
                    listings_path, missing, images_csv, photoless, duplicates)
    if not articles:
        raise CatalogError(f"{listings_path}: no listing has a photo listed in {images_csv}")
    return Catalog(list(articles.values()), images_root, name="abo")


# Kaggle fashion-product styles.csv


def from_styles_csv(root: str | os.PathLike, group_by: str | Sequence[str] = "articleType") -> Catalog:
    """Kaggle "Fashion Product Images": `root/styles.csv` and photos `root/images/<id>.jpg`, one photo per article.

    group = the `group_by` column (several columns are joined with "/"; an empty value gives no group), title =
    productDisplayName, the other non-empty columns in meta. Rows whose photo is missing are skipped and counted
    in a logged warning. Extra commas in a row (unquoted commas in the title) are kept in the title.
    """
    root = absolute(root)
    path = _need_file(root / "styles.csv", "styles.csv (Kaggle fashion-product-images layout)")
    folder = root / "images"
    if not folder.is_dir():
        raise CatalogError(f"{folder}: photo folder not found (expected images/<id>.jpg beside styles.csv)")
    present = set(os.listdir(folder))
    columns = [group_by] if isinstance(group_by, str) else list(group_by)
    articles, seen, missing = [], {}, 0
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        for col in ("id", "productDisplayName", *columns):
            if col not in header:
                raise CatalogError(f"{path}:1: no column {col!r} in the header {','.join(header)}")
        for row in reader:
            lineno = reader.line_num
            if not row:
                continue
            if len(row) < len(header):
                cols = ",".join(header)
                raise CatalogError(f"{path}:{lineno}: expected {len(header)} columns ({cols}), got {len(row)}")
            row = row[: len(header) - 1] + [",".join(row[len(header) - 1 :])]
            rec = dict(zip(header, (v.strip() for v in row)))
            aid = rec["id"]
            if not aid:
                raise CatalogError(f"{path}:{lineno}: empty id")
            if aid in seen:
                raise CatalogError(f"{path}:{lineno}: duplicate id {aid!r} (first on line {seen[aid]})")
            seen[aid] = lineno
            if f"{aid}.jpg" not in present:
                missing += 1
                continue
            values = [rec[c] for c in columns]
            articles.append(Article(
                id=aid, images=(folder / f"{aid}.jpg",), group="/".join(values) if all(values) else None,
                title=rec["productDisplayName"] or None,
                meta={k: v for k, v in rec.items() if k not in ("id", "productDisplayName") and v},
            ))
    if missing:
        log.warning("%s: skipped %d of %d rows whose photo images/<id>.jpg is missing", path, missing, len(seen))
    if not articles:
        raise CatalogError(f"{path}: none of the {len(seen)} rows has its photo in {folder}")
    return Catalog(articles, root, name=root.name)
