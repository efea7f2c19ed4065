"""BM25 sparse vectors, from the BM25 embedder built into qdrant-edge, for both adapters.

The embedder uses the same token ids and formula as Qdrant server's BM25, so vectors
made here are valid in an Edge shard and in a server collection alike. It writes only
term frequencies: the sparse vector must be configured with the IDF modifier, and the
engine supplies IDF at query time from the points it holds.

BM25 weighs the two sides differently: documents get saturated, length-normalised
term frequencies (k=1.2, b=0.75, avg_len=256), queries a weight of 1.0 per distinct
term. Mixing them up silently degrades ranking, hence two functions.
"""

from __future__ import annotations

from functools import cache

from qdrant_edge import Bm25, Bm25Config

SparseValues = tuple[list[int], list[float]]
"""(indices, values) of a sparse vector, independent of either client library."""


@cache
def _model() -> Bm25:
    return Bm25(Bm25Config(language="english"))


def encode_document(text: str) -> SparseValues:
    """Sparse vector of a stored text (English stemming and stop words)."""
    vector = _model().embed_document(text)
    return vector.indices, vector.values


def encode_query(text: str) -> SparseValues:
    """Sparse vector of a query text; empty when it has only stop words."""
    vector = _model().embed_query(text)
    return vector.indices, vector.values
