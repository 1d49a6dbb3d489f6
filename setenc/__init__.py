"""setenc: one vector per article, where an article is an unordered set of product photos.

Frozen backbone -> photo vectors (cached) -> learned permutation-invariant set head -> FAISS search,
with the classic pairwise matchers kept as baselines. Training (`setenc.training`, the `[train]` extra) is not imported here,
so inference code never pulls in Lightning.
"""

__version__ = "0.1.0"  # first: submodules read it while the package initialises

from setenc.catalogs import Article, Catalog, load_catalog, make_demo_catalog, split_catalog, write_catalog
from setenc.encoder import SetEncoder
from setenc.errors import CatalogError, CheckpointError, ImageError, SetencError
from setenc.evaluation import evaluate_catalog, retrieval_metrics, tune_matcher
from setenc.heads import SetHead, create_head, list_heads
from setenc.index import SetIndex, export_index
from setenc.losses import InfoNCE, SupConLoss, create_loss, list_losses
from setenc.matchers import create_matcher, list_matchers, pairwise_scores
from setenc.photos import (Backbone, EmbeddingCache, article_embeddings, create_backbone, embed_catalog,
                           list_backbones, photo_sets)
from setenc.sets import masked_mean, pad_sets

__all__ = [
    "Article", "Backbone", "Catalog", "CatalogError", "CheckpointError", "EmbeddingCache", "ImageError", "InfoNCE",
    "SetEncoder", "SetHead", "SetIndex", "SetencError", "SupConLoss", "__version__", "article_embeddings",
    "create_backbone", "create_head", "create_loss", "create_matcher", "embed_catalog", "evaluate_catalog",
    "export_index", "list_backbones", "list_heads", "list_losses", "list_matchers", "load_catalog",
    "make_demo_catalog", "masked_mean", "pad_sets", "pairwise_scores", "photo_sets", "retrieval_metrics", "split_catalog", "tune_matcher", "write_catalog",
]
