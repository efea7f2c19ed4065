"""Retrieval's edges: the stage that indexes embedded documents, and gRPC `Search`.

Store calls are synchronous and run on the event-loop thread on purpose: with
the in-process Qdrant Edge store that makes replacing a document's chunks
atomic for concurrent searches (nothing can interleave), and each call takes
well under a millisecond per chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc
from nats.js import JetStreamContext

from llmops.bus.codec import MalformedMessage, decode
from llmops.bus.events import document_event, publish_document_event
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.tracing import span
from llmops.v1 import (
    documents_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    events_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from retrieval.settings import RetrievalSettings
from retrieval.store import ChunkRecord, SearchQuery, VectorStore

log = get_logger(__name__)
STAGE = "retrieval"
DEFAULT = "default"
_MODES = {
    retrieval_pb2.SEARCH_MODE_UNSPECIFIED: "hybrid",
    retrieval_pb2.SEARCH_MODE_HYBRID: "hybrid",
    retrieval_pb2.SEARCH_MODE_DENSE: "dense",
    retrieval_pb2.SEARCH_MODE_SPARSE: "sparse",
}


class IndexHandler:
    def __init__(
        self,
        store: Loaded[VectorStore],
        js: Callable[[], JetStreamContext],
        on_change: Callable[[int], None],
    ) -> None:
        self._store = store
        self._js = js
        self._on_change = on_change

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            with span("retrieval.index", parent=delivery.headers):
                try:
                    await self._index(delivery)
                except MalformedMessage as exc:
                    delivery.fail(PoisonMessage(str(exc)))
                except Exception as exc:
                    delivery.fail(exc)

    async def _index(self, delivery: Delivery) -> None:
        embedded = decode(delivery.data, delivery.headers, documents_pb2.EmbeddedDocument)
        doc = embedded.document
        delivery.tenant, delivery.doc_id = doc.tenant, doc.doc_id
        store = self._store.value
        if doc.deleted:
            applied = store.delete_document(doc.tenant, doc.doc_id, doc.version)
            status = events_pb2.DOCUMENT_STATUS_DELETED
        else:
            records = [_record(doc, c) for c in embedded.chunks]
            applied = store.replace_document(doc.tenant, doc.doc_id, doc.version, records)
            status = events_pb2.DOCUMENT_STATUS_INDEXED
        if applied:
            self._on_change(max(len(embedded.chunks), 1))
        else:
            status = events_pb2.DOCUMENT_STATUS_SUPERSEDED
        tokens = sum(c.chunk.token_count for c in embedded.chunks)
        event = document_event(STAGE, status, doc, chunks=len(embedded.chunks), tokens=tokens)
        await publish_document_event(self._js(), event)
        log.info(
            "document.indexed" if applied else "document.superseded",
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            version=doc.version,
            chunks=len(embedded.chunks),
            deleted=doc.deleted,
        )


def _record(doc: documents_pb2.ChunkedDocument, c: documents_pb2.EmbeddedChunk) -> ChunkRecord:
    return ChunkRecord(
        chunk_id=c.chunk.chunk_id,
        tenant=doc.tenant,
        doc_id=doc.doc_id,
        collection=doc.collection,
        version=doc.version,
        index=c.chunk.index,
        text=c.chunk.text,
        heading=c.chunk.heading,
        source=doc.source,
        title=doc.title,
        metadata=dict(doc.metadata),
        dense=c.dense,
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServicer):
    def __init__(
        self,
        store: Loaded[VectorStore],
        embedder: Callable[[], embedding_pb2_grpc.EmbeddingStub],
        settings: RetrievalSettings,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings

    async def Search(
        self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.SearchResponse:
        started = time.perf_counter()
        query = request.query.strip()
        if not query:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "query is empty")
        k = request.top_k or self._settings.search_default_k
        if not 0 < k <= self._settings.search_max_k:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"top_k must be between 1 and {self._settings.search_max_k}",
            )
        mode = _MODES.get(request.mode)
        if mode is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown mode {request.mode}")
        dense = None if mode == "sparse" else await self._embed(query, context)
        hits = self._store.value.search(
            SearchQuery(
                tenant=request.tenant or DEFAULT,
                text=query,
                dense=dense,
                top_k=k,
                collection=request.collection,
                filters=dict(request.filters),
                mode=mode,  # type: ignore[arg-type]
            )
        )
        return retrieval_pb2.SearchResponse(
            hits=[
                retrieval_pb2.SearchHit(
                    chunk_id=h.chunk_id,
                    doc_id=h.doc_id,
                    score=h.score,
                    text=h.text,
                    source=h.source,
                    title=h.title,
                    heading=h.heading,
                    index=h.index,
                    version=h.version,
                    collection=h.collection,
                    metadata=h.metadata,
                )
                for h in hits
            ],
            took_ms=(time.perf_counter() - started) * 1000,
        )

    async def _embed(self, query: str, context: grpc.aio.ServicerContext) -> list[float]:
        remaining = context.time_remaining()
        timeout = min(self._settings.query_timeout_s, remaining or self._settings.query_timeout_s)
        try:
            reply = await self._embedder().Embed(
                embedding_pb2.EmbedRequest(texts=[query]), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("search.embedding_unavailable", code=exc.code().name)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the embedding service did not embed the query ({exc.code().name}): "
                "dense and hybrid search need it; SEARCH_MODE_SPARSE works without it",
            )
        return list(reply.vectors[0].values)
