"""Embedding service: chunked documents in, embedded documents out; `Embed` for queries."""

from __future__ import annotations

from embedding.handlers import STAGE, EmbeddingServicer, EmbedHandler, EncoderHolder
from embedding.settings import EmbeddingSettings
from llmops.bus.events import failure_events
from llmops.bus.topology import EMBEDDING_CONSUMER
from llmops.service import ServiceApp
from llmops.settings import port_of
from llmops.v1 import embedding_pb2, embedding_pb2_grpc

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["Embedding"].full_name


def create_app(settings: EmbeddingSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_address=f"{settings.bind_host}:{port_of(settings.embedding_addr)}",
        metrics_port=settings.embedding_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    model = EncoderHolder(settings)
    servicer = EmbeddingServicer(model, settings.embed_max_texts)

    app.on_startup(model.start)
    app.add_grpc(
        lambda server: embedding_pb2_grpc.add_EmbeddingServicer_to_server(servicer, server)
    )
    app.add_stage(
        EMBEDDING_CONSUMER,
        EmbedHandler(model, lambda: app.js),
        batch_size=settings.embed_fetch_docs,
        on_dead_letter=failure_events(STAGE, lambda: app.js),
    )
    return app
