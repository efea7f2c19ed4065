"""The retrieval service's vector store: one interface, adapters for Qdrant Edge and server."""

from retrieval.store.base import (
    AnswerHit,
    AnswerLookup,
    AnswerRecord,
    AnswerStore,
    ChunkRecord,
    Hit,
    SearchMode,
    SearchQuery,
    VectorStore,
)
from retrieval.store.edge import EdgeStore
from retrieval.store.errors import StoreError
from retrieval.store.factory import open_answer_store, open_store
from retrieval.store.server import QdrantServerStore

__all__ = [
    "AnswerHit",
    "AnswerLookup",
    "AnswerRecord",
    "AnswerStore",
    "ChunkRecord",
    "EdgeStore",
    "Hit",
    "QdrantServerStore",
    "SearchMode",
    "SearchQuery",
    "StoreError",
    "VectorStore",
    "open_answer_store",
    "open_store",
]
