"""gRPC `ListDocuments` and `GetDocument`: the document catalog, one tenant at a time.

A request only ever reads keys under its own tenant's prefix, so no filter on
the way out can forget to hide another tenant's documents. Errors become gRPC
status codes here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NoReturn

import grpc

from ingestion.catalog import CatalogRecord, DocumentCatalog
from llmops.ids import refusals
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import events_pb2, ingestion_pb2

log = get_logger(__name__)
DEFAULT = "default"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class BadPageToken(ValueError):
    pass


def page_token(after: str) -> str:
    """Opaque to callers; it carries the last doc id of the page it ends."""
    raw = json.dumps({"after": after}, ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_after(token: str) -> str:
    """The doc id a page token continues after ("" for the first page)."""
    if not token:
        return ""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise BadPageToken(f"invalid page_token {token[:80]!r}: not one this API gave") from exc
    after = decoded.get("after") if isinstance(decoded, dict) else None
    if not isinstance(after, str) or not after:
        raise BadPageToken(f"invalid page_token {token[:80]!r}: not one this API gave")
    return after


def document_info(record: CatalogRecord) -> ingestion_pb2.DocumentInfo:
    info = ingestion_pb2.DocumentInfo(
        tenant=record.tenant,
        doc_id=record.doc_id,
        collection=record.collection,
        source=record.source,
        version=record.version,
        content_bytes=record.content_bytes,
        chunks=record.chunks,
        tokens=record.tokens,
        status=events_pb2.DocumentStatus.Value(f"DOCUMENT_STATUS_{record.status.upper()}"),
        last_error=record.last_error,
        stage=record.stage,
        versions=record.versions,
    )
    info.updated.FromNanoseconds(record.updated_ns)
    return info


class DocumentQueries:
    """The catalog half of the Ingestion servicer (IngestionServicer inherits it)."""

    def __init__(self, catalog: Loaded[DocumentCatalog]) -> None:
        self._document_catalog = catalog

    async def ListDocuments(
        self, request: ingestion_pb2.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.ListDocumentsResponse:
        tenant = request.tenant or DEFAULT
        ids = {
            "tenant": tenant,
            **({"collection": request.collection} if request.collection else {}),
        }
        await _refuse(context, refusals(**ids))
        if request.page_size < 0:
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative"
            )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        try:
            after = token_after(request.page_token)
        except BadPageToken as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            page = await self._document_catalog.value.page(
                tenant,
                after=after,
                limit=size,
                collection=request.collection,
                include_deleted=request.include_deleted,
            )
        except Exception as exc:  # NATS down, or the catalog not opened yet
            log.error("catalog.list_failed", tenant=tenant, error=str(exc))
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"the document catalog: {exc}")
        return ingestion_pb2.ListDocumentsResponse(
            documents=[document_info(r) for r in page.records],
            next_page_token=page_token(page.records[-1].doc_id) if page.more else "",
        )

    async def GetDocument(
        self, request: ingestion_pb2.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ingestion_pb2.DocumentInfo:
        tenant = request.tenant or DEFAULT
        await _refuse(context, refusals(tenant=tenant, doc_id=request.doc_id))
        try:
            record = await self._document_catalog.value.get(tenant, request.doc_id)
        except Exception as exc:
            log.error("catalog.get_failed", tenant=tenant, error=str(exc))
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"the document catalog: {exc}")
        if record is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no document {request.doc_id!r} in tenant {tenant!r}",
            )
        return document_info(record)


async def _refuse(context: grpc.aio.ServicerContext, refused: dict[str, str]) -> None:
    """INVALID_ARGUMENT with llmops.ids's reasons, the same words as every other edge."""
    if refused:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "; ".join(refused.values()))


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str
) -> NoReturn:
    await context.abort(code, details)
    raise AssertionError("grpc's abort always raises")
