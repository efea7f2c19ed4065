"""Ingestion's edges: the JetStream stage handler (ingest/delete) and the gRPC servicer.

Per document: decode -> (a large one: stream its upload to a spool file) -> parse,
clean, hash in a worker process (deadline, memory cap) -> skip if the registry
already holds this content -> chunk -> publish the ChunkedDocument durably
(Nats-Msg-Id = tenant:doc:version, so a redelivery after a crash is de-duplicated
by JetStream) -> record the new version -> remove the upload -> ack.

An upload is removed only once the outcome is recorded, and kept when the document
is refused (its dead letter still references it, so a replay finds the bytes). A
redelivery after the removal (a crash before the ack) finds the registry already
holding those exact bytes, and reports the document unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from nats.js import JetStreamContext

from ingestion.attachments import attachment_documents
from ingestion.catalog import DocumentCatalog
from ingestion.catalog_api import DocumentQueries
from ingestion.errors import DocumentTooLarge, IngestionError, InvalidDocument
from ingestion.limits import check_size
from ingestion.pipeline import DocumentPipeline, PreparedDocument
from ingestion.redaction import DocumentRedactor
from ingestion.registry import DocumentRegistry, DocumentState
from ingestion.settings import IngestionSettings
from ingestion.spool import Spool
from ingestion.worker import ParserPool
from llmops import metrics, uploads
from llmops.bus.codec import CONTENT_TYPE, PROTOBUF, MalformedMessage, decode
from llmops.bus.events import document_event, publish_document_event
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import (
    DOCS_CHUNKED,
    DOCS_DELETE,
    DOCUMENT_REGISTRY_BUCKET,
    MAX_MESSAGE_BYTES,
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
        self._parsers = ParserPool(
            settings.parse_workers, settings.parse_timeout_s, settings.parse_memory_mb
        )
        self._spool = Spool(settings.spool_dir)

    async def start(self) -> None:
        """Load the tokenizer, start the parser processes and open the registry bucket
        (start-up, not import time)."""
        s = self._settings
        self._parsers.start()
        self._spool.start()
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

    def stop(self) -> None:
        self._parsers.stop()
        self._spool.stop()

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
        ref = doc.content_ref if doc.HasField("content_ref") else None
        prepared = await self._prepare(doc, ref)
        if prepared is None:
            return  # a redelivery of an upload already ingested and removed
        # An e-mail's attachments are documents of their own (published each time: the
        # e-mail's hash covers only its own text; an unchanged attachment stays unchanged).
        for attachment in attachment_documents(doc, prepared.parsed):
            await uploads.publish_document(self._js(), attachment, headers=inject())
        registry = self._registry.value
        state, revision = await registry.get(doc.tenant, doc.doc_id)
        size = ref.size if ref else len(doc.content)
        if state and not state.deleted and state.content_hash == prepared.content_hash:
            log.info(
                "document.unchanged", tenant=doc.tenant, doc_id=doc.doc_id, version=state.version
            )
            await self._unchanged(doc, size, state.version)
        else:
            await self._index(doc, prepared, state, revision, size, ref)
        if ref and not ref.keep:
            await uploads.remove(self._js(), ref)

    async def _prepare(
        self, doc: documents_pb2.Document, ref: documents_pb2.ContentRef | None
    ) -> PreparedDocument | None:
        """Parse in a worker: the content itself, or the upload streamed to a spool file.

        None when the upload is gone because this very document was ingested already (the
        registry holds its bytes' digest): the outcome was recorded before a crash.
        """
        pipeline = self._pipeline.value
        if ref is None:
            return await self._parsers.prepare(pipeline.job(doc))
        check_size(ref.size, self._settings.max_document_bytes)  # before reading a byte
        with self._spool.file() as path:
            try:
                with path.open("wb") as spool:
                    await uploads.download(self._js(), ref, spool)
            except uploads.UploadMissing as exc:
                state, _ = await self._registry.value.get(doc.tenant, doc.doc_id)
                if state and state.raw_sha256 == ref.sha256:
                    await self._unchanged(doc, ref.size, state.version)
                    return None
                raise InvalidDocument(str(exc)) from None
            except uploads.UploadMismatch as exc:
                raise InvalidDocument(str(exc)) from None
            return await self._parsers.prepare(pipeline.job(doc, path))

    async def _unchanged(self, doc: documents_pb2.Document, size: int, version: int) -> None:
        same = documents_pb2.ChunkedDocument(
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            collection=doc.collection,
            source=doc.source,
            version=version,
        )
        await publish_document_event(
            self._js(),
            document_event(STAGE, events_pb2.DOCUMENT_STATUS_UNCHANGED, same, content_bytes=size),
        )

    async def _index(
        self,
        doc: documents_pb2.Document,
        prepared: PreparedDocument,
        state: DocumentState | None,
        revision: int,
        size: int,
        ref: documents_pb2.ContentRef | None,
    ) -> None:
        version = (state.version if state else 0) + 1
        prepared = await self._redactor.redact(doc, prepared)
        chunked = await asyncio.to_thread(self._pipeline.value.chunk, doc, prepared, version)
        chunked.content_bytes = size
        _check_fits_the_bus(chunked)
        await self._publish(chunked)
        raw_sha256 = ref.sha256 if ref else ""
        await self._registry.value.put(
            DocumentState(
                doc.tenant, doc.doc_id, version, prepared.content_hash, False, raw_sha256
            ),
            revision,
        )
        metrics.CHUNKS.labels(STAGE).inc(len(chunked.chunks))
        log.info(
            "document.chunked",
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            version=version,
            chunks=len(chunked.chunks),
        )
        if prepared.parsed.warnings:  # e.g. scanned PDF pages OCR'd, or not indexed
            log.warning(
                "document.incomplete",
                tenant=doc.tenant,
                doc_id=doc.doc_id,
                warnings=list(prepared.parsed.warnings),
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


# What embedding adds per chunk: a 384-dimension float32 vector and its framing.
_VECTOR_BYTES_PER_CHUNK = 384 * 4 + 16


def _check_fits_the_bus(chunked: documents_pb2.ChunkedDocument) -> None:
    """Refuse a document whose chunks (with their vectors, once embedded) would not fit one
    bus message, with the figures, rather than failing on every stage's retry."""
    size = chunked.ByteSize() + len(chunked.chunks) * _VECTOR_BYTES_PER_CHUNK
    if size > MAX_MESSAGE_BYTES:
        raise DocumentTooLarge(
            f"its {len(chunked.chunks)} chunks are about {size // 2**20} MiB once embedded; "
            f"a bus message carries {MAX_MESSAGE_BYTES // 2**20} MiB: split the document"
        )


class IngestionServicer(DocumentQueries, ingestion_pb2_grpc.IngestionServicer):
    """gRPC front door: checks ids and sizes, then publishes to the same JetStream subjects;
    answers what is in the index from the catalog."""

    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        max_document_bytes: int,
        catalog: Loaded[DocumentCatalog],
    ) -> None:
        super().__init__(catalog)
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
            size = doc.content_ref.size if doc.HasField("content_ref") else len(doc.content)
            if size > self._max_bytes:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"document {doc.doc_id!r} is {size} bytes; the limit is {self._max_bytes} "
                    "(LLMOPS_MAX_DOCUMENT_BYTES)",
                )
        async with _publishing(context):
            for doc in request.documents:
                await uploads.publish_document(self._js(), doc, headers=inject())
        return ingestion_pb2.IngestResponse(doc_ids=[d.doc_id for d in request.documents])

    async def Delete(
        self, request: ingestion_pb2.DeleteRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.DeleteResponse:
        await _refuse_ids(context, tenant=request.tenant or DEFAULT)
        for doc_id in request.doc_ids:
            await _refuse_ids(context, doc_id=doc_id)
        headers = {**inject(), CONTENT_TYPE: PROTOBUF}
        async with _publishing(context):
            for doc_id in request.doc_ids:
                message = documents_pb2.DeleteDocument(tenant=request.tenant, doc_id=doc_id)
                await self._js().publish(DOCS_DELETE, message.SerializeToString(), headers=headers)
        return ingestion_pb2.DeleteResponse()


@contextlib.asynccontextmanager
async def _publishing(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """A publish that fails is UNAVAILABLE for the caller (NATS down), never a crash."""
    try:
        yield
    except Exception as exc:
        log.error("ingest.publish_failed", error=str(exc))
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot publish to NATS: {exc}")


async def _refuse_ids(context: grpc.aio.ServicerContext, **ids: str) -> None:
    """Abort with INVALID_ARGUMENT and the bus's reasons when an id breaks the grammar."""
    refused = refusals(**ids)
    if refused:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "; ".join(refused.values()))
