"""Pick the store adapter from settings: Qdrant Edge by default, a server when a URL is set."""

from __future__ import annotations

from pathlib import Path

from qdrant_client import QdrantClient

from retrieval.store.base import AnswerStore, VectorStore
from retrieval.store.edge import EdgeStore
from retrieval.store.points import DEFAULT_FUSION, Fusion
from retrieval.store.server import QdrantServerStore

ANSWERS_DIR = "qdrant_answers"
ANSWERS_COLLECTION = "llmops_answers"


def open_store(
    data_dir: Path,
    qdrant_url: str | None,
    qdrant_api_key: str | None = None,
    fusion: Fusion = DEFAULT_FUSION,
) -> VectorStore:
    """A Qdrant server store for `qdrant_url`, else an Edge shard under `data_dir / "qdrant"`.

    `fusion` is how hybrid search merges dense and BM25 (`LLMOPS_HYBRID_FUSION`).
    """
    if qdrant_url:
        client = QdrantClient(url=qdrant_url, api_key=qdrant_api_key)
        return QdrantServerStore(client, fusion=fusion)
    return EdgeStore(data_dir / "qdrant", fusion=fusion)


def open_answer_store(
    data_dir: Path, qdrant_url: str | None, qdrant_api_key: str | None = None
) -> AnswerStore:
    """The answer cache's own store: collection `llmops_answers`, or a second Edge shard.

    Apart from the documents' store, so no search, count or optimise of documents sees it.
    """
    if qdrant_url:
        client = QdrantClient(url=qdrant_url, api_key=qdrant_api_key)
        return QdrantServerStore(client, collection=ANSWERS_COLLECTION)
    return EdgeStore(data_dir / ANSWERS_DIR)
