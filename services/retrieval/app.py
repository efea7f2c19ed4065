"""Retrieval service: the only owner of Qdrant. Embedded documents in, `Search` out."""

from __future__ import annotations

from llmops.bus.events import failure_events
from llmops.bus.topology import RETRIEVAL_CONSUMER
from llmops.grpcutil import channel
from llmops.service import ServiceApp
from llmops.settings import port_of
from llmops.v1 import embedding_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from retrieval.handlers import STAGE, IndexHandler, RetrievalServicer, StoreHolder
from retrieval.settings import RetrievalSettings

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


def create_app(settings: RetrievalSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_address=f"{settings.bind_host}:{port_of(settings.retrieval_addr)}",
        metrics_port=settings.retrieval_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    stores = StoreHolder(settings)
    stubs: dict[str, embedding_pb2_grpc.EmbeddingStub] = {}

    def embedder() -> embedding_pb2_grpc.EmbeddingStub:
        # One channel for the process, made lazily inside the running event loop.
        if "stub" not in stubs:
            stubs["stub"] = embedding_pb2_grpc.EmbeddingStub(channel(settings.embedding_addr))
        return stubs["stub"]

    servicer = RetrievalServicer(stores, embedder, settings)

    app.on_startup(stores.start)
    app.on_shutdown(stores.stop)
    app.add_grpc(
        lambda server: retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    )
    app.add_stage(
        RETRIEVAL_CONSUMER,
        IndexHandler(stores, lambda: app.js),
        batch_size=settings.index_batch_size,
        on_dead_letter=failure_events(STAGE, lambda: app.js),
    )
    return app
