"""Ingestion's edges: the JetStream stage handler (ingest/delete) and the gRPC servicer.

Per document: decode -> parse, clean, hash (off the event loop) -> skip if the
registry already holds this content -> chunk -> publish the ChunkedDocument
durably (Nats-Msg-Id = tenant:doc:version, so a redelivery after a crash is
de-duplicated by JetStream) -> record the new version -> ack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
from nats.js import JetStreamContext

from ingestion.attachments import attachment_documents
from ingestion.errors import IngestionError, InvalidDocument
from ingestion.pipeline import DocumentPipeline
from ingestion.redaction import DocumentRedactor
from ingestion.registry import DocumentRegistry, DocumentState
from ingestion.settings import IngestionSettings
from llmops import metrics
from llmops.bus.codec import CONTENT_TYPE, PROTOBUF, MalformedMessage, decode
from llmops.bus.events import document_event, publish_document_event
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import (
    DOCS_CHUNKED,
    DOCS_DELETE,
    DOCS_INGEST,
    DOCUMENT_REGISTRY_BUCKET,
    document_msg_id,
)
from llmops.ids import refusals
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.tracing import inject, span
from llmops.v1 import documents_pb2, events_pb2, ingestion_pb2, ingestion_pb2_grpc

log = get_logger(__name__)
STAGE = "ingestion"
DEFAULT = "default"


def _identify(delivery: Delivery, **ids: str) -> None:
    """Record on the delivery the tenant and doc id that pass (the dead letter and its
    failure event name only real ones; an unknown tenant is UNKNOWN_TENANT there), then
    refuse the message if any id does not."""
    refused = refusals(**ids)
    delivery.tenant = "" if "tenant" in refused else ids["tenant"]
    delivery.doc_id = "" if "doc_id" in refused else ids["doc_id"]
    if refused:
        raise InvalidDocument("; ".join(refused.values()))


class IngestHandler:
    """Handles a batch from `llmops.docs.ingest` / `llmops.docs.delete`, in order."""

    def __init__(
        self,
        settings: IngestionSettings,
        js: Callable[[], JetStreamContext],
        redactor: DocumentRedactor,
    ) -> None:
        self._settings = settings
        self._js = js
        self._redactor = redactor
        self._pipeline: Loaded[DocumentPipeline] = Loaded("the document pipeline")
        self._registry: Loaded[DocumentRegistry] = Loaded("the document registry")

    async def start(self) -> None:
        """Load the tokenizer and open the registry bucket (start-up, not import time)."""
        s = self._settings
        self._pipeline.set(
            DocumentPipeline(
                s.embedding_model_dir / "tokenizer.json",
                s.max_document_bytes,
                s.chunk_tokens,
                s.chunk_overlap_tokens,
            )
        )
        kv = await self._js().key_value(DOCUMENT_REGISTRY_BUCKET)
        self._registry.set(DocumentRegistry(kv))

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            with span("ingestion.handle", parent=delivery.headers):
                try:
                    if delivery.msg.subject == DOCS_DELETE:
                        await self._delete(delivery)
                    else:
                        await self._ingest(delivery)
                except (IngestionError, MalformedMessage) as exc:
                    reason = exc.reason if isinstance(exc, IngestionError) else str(exc)
                    delivery.fail(PoisonMessage(reason))
                except Exception as exc:
                    delivery.fail(exc)

    async def _ingest(self, delivery: Delivery) -> None:
        doc = decode(delivery.data, delivery.headers, documents_pb2.Document)
        doc.tenant = doc.tenant or DEFAULT
        doc.collection = doc.collection or DEFAULT
        _identify(delivery, tenant=doc.tenant, doc_id=doc.doc_id, collection=doc.collection)
        prepared = await asyncio.to_thread(self._pipeline.value.prepare, doc)
        # An e-mail's attachments are documents of their own (published each time: the
        # e-mail's hash covers only its own text; an unchanged attachment stays unchanged).
        for attachment in attachment_documents(doc, prepared.parsed):
            await self._js().publish(
                DOCS_INGEST,
                attachment.SerializeToString(),
                headers={**inject(), CONTENT_TYPE: PROTOBUF},
            )
        registry = self._registry.value
        state, revision = await registry.get(doc.tenant, doc.doc_id)
        if state and not state.deleted and state.content_hash == prepared.content_hash:
            log.info(
                "document.unchanged", tenant=doc.tenant, doc_id=doc.doc_id, version=state.version
            )
            await publish_document_event(
                self._js(),
                document_event(
                    STAGE,
                    events_pb2.DOCUMENT_STATUS_UNCHANGED,
                    tenant=doc.tenant,
                    doc_id=doc.doc_id,
                    content_bytes=len(doc.content),
                ),
            )
            return
        version = (state.version if state else 0) + 1
        prepared = await self._redactor.redact(doc, prepared)
        chunked = await asyncio.to_thread(self._pipeline.value.chunk, doc, prepared, version)
        await self._publish(chunked)
        await registry.put(
            DocumentState(doc.tenant, doc.doc_id, version, prepared.content_hash), revision
        )
        metrics.CHUNKS.labels(STAGE).inc(len(chunked.chunks))
        log.info(
            "document.chunked",
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            version=version,
            chunks=len(chunked.chunks),
        )

    async def _delete(self, delivery: Delivery) -> None:
        request = decode(delivery.data, delivery.headers, documents_pb2.DeleteDocument)
        tenant = request.tenant or DEFAULT
        _identify(delivery, tenant=tenant, doc_id=request.doc_id)
        registry = self._registry.value
        state, revision = await registry.get(tenant, request.doc_id)
        already_deleted = state is not None and state.deleted
        # Already deleted: re-send the same tombstone (idempotent); else the next version.
        version = (state.version if state else 0) + (0 if already_deleted else 1)
        tombstone = documents_pb2.ChunkedDocument(
            tenant=tenant, doc_id=request.doc_id, version=version, deleted=True
        )
        await self._publish(tombstone)
        if not already_deleted:
            await registry.put(DocumentState(tenant, request.doc_id, version, "", True), revision)
        log.info("document.delete_requested", tenant=tenant, doc_id=request.doc_id, version=version)

    async def _publish(self, chunked: documents_pb2.ChunkedDocument) -> None:
        headers = {
            **inject(),
            CONTENT_TYPE: PROTOBUF,
            "Nats-Msg-Id": document_msg_id(
                DOCS_CHUNKED, chunked.tenant, chunked.doc_id, chunked.version
            ),
        }
        await self._js().publish(DOCS_CHUNKED, chunked.SerializeToString(), headers=headers)


class IngestionServicer(ingestion_pb2_grpc.IngestionServicer):
    """gRPC front door: checks ids and sizes, then publishes to the same JetStream subjects."""

    def __init__(self, js: Callable[[], JetStreamContext], max_document_bytes: int) -> None:
        self._js = js
        self._max_bytes = max_document_bytes

    async def Ingest(
        self, request: ingestion_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.IngestResponse:
        for doc in request.documents:
            await _refuse_ids(
                context,
                tenant=doc.tenant or DEFAULT,
                doc_id=doc.doc_id,
                collection=doc.collection or DEFAULT,
            )
            if len(doc.content) > self._max_bytes:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"document {doc.doc_id!r} is {len(doc.content)} bytes; "
                    f"the limit is {self._max_bytes}",
                )
        await self._publish_all(
            context, DOCS_INGEST, [d.SerializeToString() for d in request.documents]
        )
        return ingestion_pb2.IngestResponse(doc_ids=[d.doc_id for d in request.documents])

    async def Delete(
        self, request: ingestion_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.DeleteResponse:
        await _refuse_ids(context, tenant=request.tenant or DEFAULT)
        for doc_id in request.doc_ids:
            await _refuse_ids(context, doc_id=doc_id)
        payloads = [
            documents_pb2.DeleteDocument(tenant=request.tenant, doc_id=d).SerializeToString()
            for d in request.doc_ids
        ]
        await self._publish_all(context, DOCS_DELETE, payloads)
        return ingestion_pb2.DeleteResponse()

    async def _publish_all(
        self, context: grpc.aio.ServicerContext, subject: str, payloads: list[bytes]
    ) -> None:
        headers = {**inject(), CONTENT_TYPE: PROTOBUF}
        try:
            for payload in payloads:
                await self._js().publish(subject, payload, headers=headers)
        except Exception as exc:
            log.error("ingest.publish_failed", error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot publish to NATS: {exc}")


async def _refuse_ids(context: grpc.aio.ServicerContext, **ids: str) -> None:
    """Abort with INVALID_ARGUMENT and the bus's reasons when an id breaks the grammar."""
    refused = refusals(**ids)
    if refused:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(refused.values()))
