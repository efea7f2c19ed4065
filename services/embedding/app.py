"""Embedding service: chunked documents in, embedded documents out; `Embed` for queries."""

from __future__ import annotations

import asyncio

from embedding.handlers import STAGE, EmbeddingServicer, EmbedHandler, load_encoder
from embedding.settings import EmbeddingSettings
from llmops.bus.events import failure_events
from llmops.bus.topology import EMBEDDING_CONSUMER
from llmops.encoder.onnx import OnnxEncoder
from llmops.service import Loaded, ServiceApp
from llmops.v1 import embedding_pb2, embedding_pb2_grpc

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["Embedding"].full_name


def create_app(settings: EmbeddingSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.embedding_addr,
        metrics_port=settings.embedding_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    model: Loaded[OnnxEncoder] = Loaded("the embedding model")
    servicer = EmbeddingServicer(model, settings.embed_max_texts)

    async def load_model() -> None:
        model.set(await asyncio.to_thread(load_encoder, settings))

    app.on_startup(load_model)
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
