"""Ingestion service: documents in (`llmops.docs.ingest`/`.delete`, gRPC), chunks out,
redacted first where the tenant's guardrail policy asks."""

from __future__ import annotations

from ingestion.catalog import CatalogHandler
from ingestion.deadletters import DeadLettersServicer
from ingestion.handlers import STAGE, IngestHandler, IngestionServicer
from ingestion.redaction import DocumentRedactor
from ingestion.settings import IngestionSettings
from llmops.bus.events import failure_events
from llmops.bus.topology import CATALOG_CONSUMER, INGESTION_CONSUMER
from llmops.grpcutil import lazy_stub
from llmops.guardrails.store import PolicyMirror
from llmops.service import ServiceApp
from llmops.v1 import (
    deadletters_pb2,
    deadletters_pb2_grpc,
    guardrails_pb2_grpc,
    ingestion_pb2,
    ingestion_pb2_grpc,
)

SERVICE_NAME = ingestion_pb2.DESCRIPTOR.services_by_name["Ingestion"].full_name
DEAD_LETTERS_SERVICE = deadletters_pb2.DESCRIPTOR.services_by_name["DeadLetters"].full_name


def create_app(settings: IngestionSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.ingestion_addr,
        metrics_port=settings.ingestion_metrics_port,
        grpc_services=[SERVICE_NAME, DEAD_LETTERS_SERVICE],
        # Ingest takes whole documents: up to the size limit, plus the message around it.
        grpc_max_message_bytes=settings.max_document_bytes + 1024 * 1024,
    )
    policies = PolicyMirror()
    redactor = DocumentRedactor(
        policies, lazy_stub(guardrails_pb2_grpc.GuardrailsStub, settings.guardrails_addr)
    )
    handler = IngestHandler(settings, lambda: app.js, redactor)
    catalog = CatalogHandler(lambda: app.js)

    async def load() -> None:
        await handler.start()
        await catalog.start()
        await policies.start(app.js)

    async def close() -> None:
        await policies.stop()
        handler.stop()

    servicer = IngestionServicer(lambda: app.js, settings.max_document_bytes, catalog.catalog)
    dead_letters = DeadLettersServicer(lambda: app.js)

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_grpc(
        lambda server: ingestion_pb2_grpc.add_IngestionServicer_to_server(servicer, server)
    )
    app.add_grpc(
        lambda server: deadletters_pb2_grpc.add_DeadLettersServicer_to_server(dead_letters, server)
    )
    app.add_stage(
        INGESTION_CONSUMER,
        handler,
        batch_size=settings.ingest_batch_size,
        on_dead_letter=failure_events(STAGE, lambda: app.js),
    )
    # The catalog of what is in the index, kept from the document events (no failure event
    # for its own dead letters: that would be an event about an event).
    app.add_stage(CATALOG_CONSUMER, catalog, batch_size=256)
    return app
