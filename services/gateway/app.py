"""Gateway service: gRPC `llmops.v1.Gateway` and the OpenAI-compatible HTTP API, one pipeline."""

from __future__ import annotations

from aiohttp import web

from gateway.budgets import BudgetGuard
from gateway.caches import ExactCache
from gateway.embeddings import EmbeddingsFlow
from gateway.grpc_api import GatewayServicer
from gateway.guard import Guard
from gateway.openai_api import create_http_app
from gateway.pipeline import ChatPipeline, Upstreams
from gateway.prompts import Prompts, load_prompts
from gateway.ratelimit import RateLimiter
from gateway.settings import GatewaySettings
from llmops.apikeys import KeyDirectory
from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import RATE_LIMITS_BUCKET, RESPONSE_CACHE_BUCKET
from llmops.grpcutil import lazy_stub
from llmops.guardrails.store import PolicyMirror
from llmops.logging import get_logger
from llmops.pricebook import PriceBook
from llmops.service import Loaded, ServiceApp
from llmops.settings import port_of
from llmops.v1 import (
    embedding_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    guardrails_pb2_grpc,
    inference_pb2_grpc,
    retrieval_pb2_grpc,
)

log = get_logger(__name__)
STAGE = "gateway"
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name


def create_app(settings: GatewaySettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.gateway_addr,
        metrics_port=settings.gateway_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    prompts: Loaded[Prompts] = Loaded("the prompts file")
    exact_cache: Loaded[ExactCache] = Loaded("the exact cache")
    limiter: Loaded[RateLimiter] = Loaded("the rate limiter")
    events: Loaded[EventPublisher] = Loaded("the interaction publisher")
    keys = KeyDirectory()
    upstreams = Upstreams(
        retrieval=lazy_stub(retrieval_pb2_grpc.RetrievalStub, settings.retrieval_addr),
        inference=lazy_stub(inference_pb2_grpc.InferenceStub, settings.inference_addr),
        embedding=lazy_stub(embedding_pb2_grpc.EmbeddingStub, settings.embedding_addr),
    )
    policies = PolicyMirror()
    guard = Guard(
        policies,
        lazy_stub(guardrails_pb2_grpc.GuardrailsStub, settings.guardrails_addr),
        events,
    )
    prices = PriceBook()
    budgets = BudgetGuard(settings.gateway_replicas)
    pipeline = ChatPipeline(
        settings, prompts, upstreams, exact_cache, limiter, events, prices, budgets, guard
    )
    embeddings = EmbeddingsFlow(upstreams.embedding, limiter, events, prices, budgets)
    http = create_http_app(settings, keys, pipeline, embeddings, upstreams.inference)
    runner = web.AppRunner(http, handler_cancellation=True, access_log=None)

    async def load() -> None:
        prompts.set(load_prompts(settings.prompts_file))  # PromptsFileError stops start-up
        js = app.js
        exact_cache.set(
            ExactCache(await js.key_value(RESPONSE_CACHE_BUCKET), settings.exact_cache_ttl_s)
        )
        limiter.set(RateLimiter(await js.key_value(RATE_LIMITS_BUCKET)))
        publisher = EventPublisher(js, STAGE)
        publisher.start()
        events.set(publisher)
        await keys.start(js)
        await prices.start(js)
        await budgets.start(js)
        await policies.start(js)
        port = port_of(settings.gateway_http_addr)
        await runner.setup()
        await web.TCPSite(runner, settings.bind_host, port).start()
        log.info("http.listening", address=f"{settings.bind_host}:{port}")

    async def close() -> None:
        await runner.cleanup()  # in-flight HTTP requests finish first
        await pipeline.drain()
        publisher = events.take()
        if publisher is not None:
            await publisher.stop()
        await keys.stop()
        await prices.stop()
        await budgets.stop()
        await policies.stop()

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_grpc(
        lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(settings, keys, pipeline), server
        )
    )
    return app
