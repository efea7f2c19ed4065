"""Retrieval service: the only owner of Qdrant. Embedded documents in, `Search` out,
and the semantic answer cache (`LookupAnswer`, `StoreAnswer`) on a store of its own."""

from __future__ import annotations

import asyncio

from llmops.bus.events import failure_events
from llmops.service import Loaded, ServiceApp
from llmops.v1 import retrieval_pb2, retrieval_pb2_grpc
from retrieval.handlers import STAGE, IndexHandler, RetrievalServicer
from retrieval.maintenance import AnswerExpiry, IdleOptimizer
from retrieval.query_embedding import query_embedder
from retrieval.settings import RetrievalSettings
from retrieval.store import AnswerStore, VectorStore, open_answer_store, open_store

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["Retrieval"].full_name


def create_app(settings: RetrievalSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.retrieval_addr,
        metrics_port=settings.retrieval_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    store: Loaded[VectorStore] = Loaded("the vector store")
    answers: Loaded[AnswerStore] = Loaded("the answer cache")
    embedder = query_embedder(settings)
    servicer = RetrievalServicer(store, embedder, settings, answers)

    optimizer = IdleOptimizer(
        lambda: store.value, settings.optimize_after_chunks, settings.optimize_idle_s
    )
    expiry = AnswerExpiry(
        lambda: answers.value, settings.answer_cache_ttl_s, settings.answer_cache_sweep_s
    )
    tasks: list[asyncio.Task[None]] = []

    async def open_the_store() -> None:
        store.set(
            open_store(
                settings.store_dir,
                settings.qdrant_url,
                settings.qdrant_api_key,
                fusion=settings.hybrid_fusion,
            )
        )
        optimizer.optimize()  # what a previous run indexed but did not optimise yet
        tasks.append(asyncio.create_task(optimizer.run()))
        answers.set(
            open_answer_store(settings.store_dir, settings.qdrant_url, settings.qdrant_api_key)
        )
        expiry.sweep()
        tasks.append(asyncio.create_task(expiry.run()))

    async def close_the_store() -> None:
        for task in tasks:
            task.cancel()
        for box in (store, answers):
            opened = box.take()
            if opened is not None:
                opened.close()

    app.on_startup(embedder.start)
    app.on_startup(open_the_store)
    app.on_shutdown(close_the_store)
    app.on_shutdown(embedder.close)
    app.add_grpc(
        lambda server: retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    )
    app.add_stage(
        settings.index_consumer,
        IndexHandler(store, lambda: app.js, optimizer.note_changes),
        batch_size=settings.index_batch_size,
        on_dead_letter=failure_events(STAGE, lambda: app.js),
    )
    return app
