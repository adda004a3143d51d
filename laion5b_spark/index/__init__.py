"""knn indices over the lake's CLIP embeddings (autofaiss) and near-duplicate images; ``search`` queries them."""

from .search import open_index, search

__all__ = ["open_index", "search"]
