"""The catalog stage and the catalog's gRPC queries on a real nats-server, for the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from nats.js import JetStreamContext

from ingestion.catalog import CatalogHandler, DocumentCatalog
from ingestion.catalog_api import DocumentQueries
from llmops.bus.events import document_event, publish_document_event
from llmops.bus.stage import Stage, StageOptions
from llmops.bus.topology import CATALOG_CONSUMER
from llmops.grpcutil import channel
from llmops.v1 import documents_pb2, events_pb2, ingestion_pb2_grpc
from tests.support import free_port


class Queries(DocumentQueries, ingestion_pb2_grpc.IngestionServicer):
    """The catalog half of the servicer alone (Ingest and Delete answer UNIMPLEMENTED)."""


@dataclass
class CatalogRig:
    js: JetStreamContext
    addr: str
    stub: ingestion_pb2_grpc.IngestionStub
    catalog: DocumentCatalog

    async def publish(
        self,
        status: events_pb2.DocumentStatus.ValueType,
        tenant: str,
        doc_id: str,
        version: int = 0,
        *,
        stage: str = "retrieval",
        collection: str = "",
        source: str = "",
        **fields: Any,
    ) -> None:
        """A document event as the stages publish it (their own helper, onto the EVENTS stream)."""
        doc = documents_pb2.ChunkedDocument(
            tenant=tenant, doc_id=doc_id, version=version, collection=collection, source=source
        )
        versioned = doc if version else None  # unchanged and failed events carry no version
        event = document_event(stage, status, versioned, tenant=tenant, doc_id=doc_id, **fields)
        await publish_document_event(self.js, event)

    async def settled(self, timeout_s: float = 10.0) -> None:
        """Until the catalog stage has handled and acked every event published so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            info = await self.js.consumer_info(
                CATALOG_CONSUMER.stream.name, CATALOG_CONSUMER.durable
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            assert loop.time() < deadline, f"catalog stage still busy: {info}"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def catalog_rig(js: JetStreamContext) -> AsyncIterator[CatalogRig]:
    handler = CatalogHandler(lambda: js)
    await handler.start()
    stage = Stage(
        "catalog",
        CATALOG_CONSUMER,
        handler,
        lambda: js,
        StageOptions(batch_size=64, fetch_timeout_s=0.2, max_deliver=3, backoff_s=(0.1,)),
    )
    await stage.start()
    server = grpc.aio.server()
    ingestion_pb2_grpc.add_IngestionServicer_to_server(Queries(handler.catalog), server)
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    async with channel(addr) as ch:
        yield CatalogRig(js, addr, ingestion_pb2_grpc.IngestionStub(ch), handler.catalog.value)
    await server.stop(0)
    await stage.stop()
