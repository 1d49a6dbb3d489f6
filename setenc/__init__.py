"""setenc: one vector per article, where an article is an unordered set of product photos.

Frozen backbone -> photo vectors (cached) -> learned permutation-invariant set head -> FAISS search,
with the classic pairwise matchers kept as baselines. Training (`setenc.training`, the `[train]` extra) is not imported here,
so inference code never pulls in Lightning.
"""

__version__ = "0.1.0"  # first: submodules read it while the package initialises

# name -> module: the public API, imported on first use so `import setenc` (and every script's `--help`) does not
# pay for torch, FAISS or transformers until something needs them (PEP 562)
_API = {
    "heads.classes": ("ClassBlock",),  # class probabilities appended where groups are classes
    "catalogs": ("Article", "Catalog", "load_catalog", "make_demo_catalog", "split_catalog", "write_catalog"),
    "encoder": ("SetEncoder",),
    "plumbing.errors": ("CatalogError", "CheckpointError", "ImageError", "SetencError"),
    "evaluation": ("evaluate_catalog", "retrieval_metrics", "tune_matcher", "vector_metrics"),
    "heads.model": ("ArticleHead", "create_head", "list_heads"),
    "heads.pooling": ("SetHead",),
    "search.export": ("delete_articles", "export_index"),
    "titles.fusion": ("Fusion", "fuse_vectors", "tune_weight"),
    "search.index": ("SetIndex",),
    "search.expansion": ("Expansion", "expansion_for"),  # neighbour expansion: an export's default search
    "training.losses": ("InfoNCE", "SupConLoss", "create_loss", "list_losses"),
    "matching.matchers": ("create_matcher", "list_matchers", "pairwise_scores"),
    "search.parquet": ("export_parquet",),
    "search.multivector": ("MultiVectorIndex",),
    "photos": ("Backbone", "EmbeddingCache", "article_embeddings", "create_backbone", "embed_catalog",
               "list_backbones", "photo_sets"),
    "photos.tta": ("TTA",),  # photo variants (flip, crop) for test-time augmentation
    "photos.ray_engine": ("BackboneFactory", "RayEngine"),  # the [scale] extra's Ray engine; Ray imported on use
    "heads.sets": ("masked_mean", "pad_sets"),
    "search.store": ("PhotoStore",),
    "titles.encoders": ("create_text_encoder", "list_text_encoders"),
    "titles.vectors": ("title_vectors",),
}
_WHERE = {name: module for module, names in _API.items() for name in names}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'setenc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"setenc.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = ["__version__", *sorted(_WHERE)]
