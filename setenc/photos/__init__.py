"""Photos -> vectors: safe decoding, frozen backbones by name, the content-keyed embedding cache, and the one path
from a catalog to per-article photo vectors (`photo_sets`)."""

from setenc.photos.backbones import Backbone, create_backbone, list_backbones
from setenc.photos.cache import EmbeddingCache
from setenc.photos.decode import ImageTransform, letterbox, load_image
from setenc.photos.embed import EmbedReport, article_embeddings, embed_catalog, photo_sets

__all__ = [
    "Backbone", "EmbedReport", "EmbeddingCache", "ImageTransform", "article_embeddings", "create_backbone",
    "embed_catalog", "letterbox", "list_backbones", "load_image", "photo_sets",
]
