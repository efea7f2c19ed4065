"""Retrieval's edges: the stage that indexes embedded documents, gRPC `Search` and
`GetChunks`, and the semantic answer cache (`LookupAnswer`, `StoreAnswer`).

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
from prometheus_client import Counter

from llmops.bus.codec import MalformedMessage, decode
from llmops.bus.events import document_event, publish_document_event, same_outcome_id
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.tracing import span
from llmops.v1 import documents_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc
from retrieval.query_embedding import QueryEmbedder, QueryEmbeddingUnavailable
from retrieval.settings import RetrievalSettings
from retrieval.store import (
    AnswerLookup,
    AnswerRecord,
    AnswerStore,
    ChunkRecord,
    Hit,
    SearchQuery,
    StoreError,
    VectorStore,
)
from retrieval.vectors import QueryVectors

log = get_logger(__name__)
STAGE = "retrieval"
DEFAULT = "default"
_MODES = {
    retrieval_pb2.SEARCH_MODE_UNSPECIFIED: "hybrid",
    retrieval_pb2.SEARCH_MODE_HYBRID: "hybrid",
    retrieval_pb2.SEARCH_MODE_DENSE: "dense",
    retrieval_pb2.SEARCH_MODE_SPARSE: "sparse",
}
DEFAULT_MIN_SCORE = 0.95
"""LookupAnswer's threshold when the request leaves `min_score` at 0 (see retrieval.proto)."""
ANSWER_CACHE = Counter(
    "llmops_answer_cache_total", "answer cache lookups and stores", ["outcome"]
)  # outcome: hit | miss | stored


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
        await publish_document_event(self._js(), same_outcome_id(event))
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
        embedder: QueryEmbedder,
        settings: RetrievalSettings,
        answers: Loaded[AnswerStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._settings = settings
        self._answers = answers if answers is not None else Loaded("the answer cache")
        self._clock = clock
        self._vectors = QueryVectors(settings.query_vector_cache_size)

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
        dense = None if mode == "sparse" else await self._embed(query, context, _SEARCH_NEEDS)
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
            hits=[_search_hit(h) for h in hits], took_ms=(time.perf_counter() - started) * 1000
        )

    async def GetChunks(
        self, request: retrieval_pb2.GetChunksRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.GetChunksResponse:
        """An interaction's cited chunks (evaluation scores answers against them)."""
        if len(request.chunk_ids) > self._settings.search_max_k:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {self._settings.search_max_k} chunk ids per call",
            )
        try:
            hits = self._store.value.get_chunks(request.tenant or DEFAULT, request.chunk_ids)
        except StoreError as exc:
            log.warning("get_chunks.store_failed", error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store failed: {exc}")
        return retrieval_pb2.GetChunksResponse(chunks=[_search_hit(h) for h in hits])

    async def LookupAnswer(
        self, request: retrieval_pb2.LookupAnswerRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.LookupAnswerResponse:
        question = await _question_of(request.question, context)
        min_score = request.min_score or DEFAULT_MIN_SCORE
        if not 0.0 < min_score <= 1.0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "min_score must be between 0 and 1"
            )
        if request.max_age_s < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_age_s must be >= 0")
        dense = await self._embed(question, context, _CACHE_NEEDS)
        lookup = AnswerLookup(
            tenant=request.tenant or DEFAULT,
            scope=request.scope,
            dense=dense,
            min_score=min_score,
            stored_after_ms=self._oldest_allowed_ms(request.max_age_s),
        )
        try:
            found = self._answers.value.find_answer(lookup)
        except StoreError as exc:
            log.warning("answer_cache.store_failed", error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the answer cache failed: {exc}")
        ANSWER_CACHE.labels("hit" if found else "miss").inc()
        if found is None:
            return retrieval_pb2.LookupAnswerResponse(hit=False)
        return retrieval_pb2.LookupAnswerResponse(
            hit=True, score=found.score, answer=found.answer, question=found.question
        )

    async def StoreAnswer(
        self, request: retrieval_pb2.StoreAnswerRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.StoreAnswerResponse:
        question = await _question_of(request.question, context)
        if not request.answer:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "answer is empty")
        dense = await self._embed(question, context, _CACHE_NEEDS)
        record = AnswerRecord(
            tenant=request.tenant or DEFAULT,
            scope=request.scope,
            question=question,
            answer=request.answer,
            dense=dense,
            stored_at_ms=int(self._clock() * 1000),
        )
        try:
            self._answers.value.put_answer(record)
        except StoreError as exc:
            log.warning("answer_cache.store_failed", error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the answer cache failed: {exc}")
        ANSWER_CACHE.labels("stored").inc()
        return retrieval_pb2.StoreAnswerResponse()

    def _oldest_allowed_ms(self, max_age_s: int) -> int:
        """The storage time below which an answer is too old: the caller's max age or the TTL."""
        now_ms = int(self._clock() * 1000)
        oldest = 0
        if max_age_s > 0:
            oldest = now_ms - max_age_s * 1000
        if self._settings.answer_cache_ttl_s > 0:
            oldest = max(oldest, now_ms - int(self._settings.answer_cache_ttl_s * 1000))
        return oldest

    async def _embed(self, text: str, context: grpc.aio.ServicerContext, needs: str) -> list[float]:
        """The text's vector from the LRU, else from the query embedder (UNAVAILABLE if down)."""
        cached = self._vectors.get(text)
        if cached is not None:
            return cached
        remaining = context.time_remaining()
        timeout = min(self._settings.query_timeout_s, remaining or self._settings.query_timeout_s)
        try:
            vector = await self._embedder.embed(text, timeout)
        except QueryEmbeddingUnavailable as exc:
            log.warning("search.embedding_unavailable", error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}: {needs}")
        self._vectors.put(text, vector)
        return vector


def _search_hit(h: Hit) -> retrieval_pb2.SearchHit:
    return retrieval_pb2.SearchHit(
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


_SEARCH_NEEDS = "dense and hybrid search need it; SEARCH_MODE_SPARSE works without it"
_CACHE_NEEDS = "the answer cache needs it to compare questions"


async def _question_of(text: str, context: grpc.aio.ServicerContext) -> str:
    """The answer cache's key question, trimmed; INVALID_ARGUMENT when there is none."""
    question = text.strip()
    if not question:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "question is empty")
    return question
