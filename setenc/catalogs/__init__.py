"""Catalogs — what articles exist: the JSONL manifest, deterministic splits, and where catalogs come from
(the generated demo catalog and adapters for real dataset layouts)."""

from setenc.catalogs.manifest import Article, Catalog, iter_jsonl, load_catalog, write_catalog
from setenc.catalogs.splits import catalog_key, hash_bucket, split_catalog
from setenc.catalogs.adapters import from_abo, from_folder, from_inshop, from_sop, from_styles_csv
from setenc.catalogs.demo import make_demo_catalog

__all__ = [
    "Article", "Catalog", "catalog_key", "from_abo", "from_folder", "from_inshop", "from_sop", "from_styles_csv",
    "hash_bucket", "iter_jsonl", "load_catalog", "make_demo_catalog", "split_catalog", "write_catalog",
]
