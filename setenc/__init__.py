"""setenc: one vector per article, where an article is an unordered set of product photos.

Frozen backbone -> photo vectors (cached) -> learned permutation-invariant set head -> FAISS search,
with the classic pairwise matchers kept as baselines. Training glue (`setenc.lit`) is not imported here,
so inference code never pulls in Lightning.
"""

__version__ = "0.1.0"  # first: submodules read it while the package initialises

from .backbones import Backbone, create_backbone, list_backbones
from .catalog import Article, Catalog, load_catalog, split_catalog, write_catalog
from .embed import EmbeddingCache, article_embeddings, embed_catalog
from .errors import CatalogError, CheckpointError, ImageError, SetencError
from .evaluate import evaluate_catalog
from .heads import SetHead, create_head, list_heads
from .index import SetIndex, export_index
from .losses import InfoNCE, SupConLoss, create_loss, list_losses
from .matching import create_matcher, list_matchers, pairwise_scores, tune_matcher
from .metrics import retrieval_metrics
from .model import SetEncoder
from .sources import make_demo_catalog

__all__ = [
    "Article", "Backbone", "Catalog", "CatalogError", "CheckpointError", "EmbeddingCache", "ImageError", "InfoNCE",
    "SetEncoder", "SetHead", "SetIndex", "SetencError", "SupConLoss", "__version__", "article_embeddings",
    "create_backbone", "create_head", "create_loss", "create_matcher", "embed_catalog", "evaluate_catalog",
    "export_index", "list_backbones", "list_heads", "list_losses", "list_matchers", "load_catalog",
    "make_demo_catalog", "pairwise_scores", "retrieval_metrics", "split_catalog", "tune_matcher", "write_catalog",
]
