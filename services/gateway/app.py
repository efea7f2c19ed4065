"""Gateway service: gRPC `llmops.v1.Gateway` and the OpenAI-compatible HTTP API, one pipeline."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from nats.js import JetStreamContext

from gateway.budgets import BudgetGuard
from gateway.caches import ExactCache
from gateway.embeddings import EmbeddingsFlow
from gateway.feedback import FeedbackDesk, RecentInteractions
from gateway.grpc_api import GatewayServicer
from gateway.guard import Guard
from gateway.openai_api import create_http_app
from gateway.pipeline import ChatPipeline, Upstreams
from gateway.prompt_admin import PromptAdmin
from gateway.ratelimit import RateLimiter
from gateway.settings import GatewaySettings
from llmops.apikeys import KeyDirectory
from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import METERING_CONSUMER, RATE_LIMITS_BUCKET, RESPONSE_CACHE_BUCKET
from llmops.grpcutil import lazy_stub
from llmops.guardrails.store import PolicyMirror
from llmops.logging import get_logger
from llmops.pricebook import PriceBook
from llmops.prompts.mirror import PromptMirror
from llmops.prompts.store import PromptStore, seed_prompts
from llmops.routing.client import Inference, InProcess, Mode, Remote, Split
from llmops.routing.providers.defaults import default_providers
from llmops.routing.router import Loadout, Router
from llmops.service import Loaded, ServiceApp
from llmops.settings import port_of
from llmops.v1 import (
    analytics_pb2_grpc,
    embedding_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    guardrails_pb2_grpc,
    inference_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
    retrieval_pb2_grpc,
)

log = get_logger(__name__)
STAGE = "gateway"
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
PROMPTS_SERVICE = prompts_pb2.DESCRIPTOR.services_by_name["PromptRegistry"].full_name


async def _start_prompts(js: JetStreamContext, seed: Path, mirror: PromptMirror) -> PromptStore:
    """Push the seed (it stores nothing when its content is in the registry already; a
    PromptError stops start-up: a broken seed file is a deployment mistake), then follow
    the registry."""
    await seed_prompts(js, seed)
    await mirror.start(js)
    return await PromptStore.open(js)


class _Routing:
    """Where generate calls go (LLMOPS_ROUTING), settled at start-up, when a bad routes file
    stops it; called, it gives the form to use."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._remote = Remote(lazy_stub(inference_pb2_grpc.InferenceStub, settings.inference_addr))
        self._router = Router(default_providers(settings.triton_grpc_addr))
        self._chosen: Loaded[Inference] = Loaded("the routes file")

    def settle(self) -> None:
        mode = self._settings.routing
        if mode is Mode.REMOTE:
            self._chosen.set(self._remote)
            return
        self._router.load(Loadout.read(self._settings.routes_file, self._settings.models_dir))
        split = Split(mode, InProcess(self._router), self._remote)
        log.info("routing.in_process", mode=mode.value, aliases=sorted(split.local_aliases))
        self._chosen.set(split)

    def __call__(self) -> Inference:
        return self._chosen.value

    async def close(self) -> None:
        await self._router.close()


async def _serve_http(runner: web.AppRunner, settings: GatewaySettings) -> None:
    port = port_of(settings.gateway_http_addr)
    await runner.setup()
    await web.TCPSite(runner, settings.bind_host, port).start()
    log.info("http.listening", address=f"{settings.bind_host}:{port}")


def create_app(settings: GatewaySettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.gateway_addr,
        metrics_port=settings.gateway_metrics_port,
        grpc_services=[SERVICE_NAME, PROMPTS_SERVICE],
    )
    prompts = PromptMirror()
    prompt_store: Loaded[PromptStore] = Loaded("the prompt registry")
    recent = RecentInteractions()
    exact_cache: Loaded[ExactCache] = Loaded("the exact cache")
    limiter: Loaded[RateLimiter] = Loaded("the rate limiter")
    events: Loaded[EventPublisher] = Loaded("the interaction publisher")
    keys = KeyDirectory()
    routing = _Routing(settings)
    upstreams = Upstreams(
        retrieval=lazy_stub(retrieval_pb2_grpc.RetrievalStub, settings.retrieval_addr),
        inference=routing,
        embedding=lazy_stub(embedding_pb2_grpc.EmbeddingStub, settings.embedding_addr),
    )
    policies = PolicyMirror()
    guard = Guard(
        policies,
        lazy_stub(guardrails_pb2_grpc.GuardrailsStub, settings.guardrails_addr),
        events,
    )
    prices = PriceBook()
    budgets = BudgetGuard(
        settings.gateway_replicas, METERING_CONSUMER.redelivery_s(settings.ack_wait_s)
    )
    pipeline = ChatPipeline(
        settings, prompts, recent, upstreams, exact_cache, limiter, events, prices, budgets, guard
    )
    feedback = FeedbackDesk(
        lambda: app.js,
        lazy_stub(analytics_pb2_grpc.AnalyticsStub, settings.analytics_addr),
        recent,
        settings.event_text,
        settings.feedback_lookup_s,
    )
    embeddings = EmbeddingsFlow(upstreams.embedding, limiter, events, prices, budgets)
    http = create_http_app(settings, keys, pipeline, embeddings, upstreams.inference, feedback)
    runner = web.AppRunner(http, handler_cancellation=True, access_log=None)

    async def load() -> None:
        routing.settle()
        js = app.js
        prompt_store.set(await _start_prompts(js, settings.prompts_file, prompts))
        exact_cache.set(
            ExactCache(await js.key_value(RESPONSE_CACHE_BUCKET), settings.exact_cache_ttl_s)
        )
        limiter.set(RateLimiter(await js.key_value(RATE_LIMITS_BUCKET), settings.gateway_replicas))
        publisher = EventPublisher(js, STAGE)
        publisher.start()
        events.set(publisher)
        await keys.start(js)
        await prices.start(js)
        await budgets.start(js)
        await policies.start(js)
        await _serve_http(runner, settings)

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
        await prompts.stop()
        await routing.close()

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_grpc(
        lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(
            GatewayServicer(settings, keys, pipeline, feedback), server
        )
    )
    app.add_grpc(
        lambda server: prompts_pb2_grpc.add_PromptRegistryServicer_to_server(
            PromptAdmin(prompt_store, keys), server
        )
    )
    return app
