"""Guardrails service: `llmops.v1.Guardrails` over tenants' policies, watched in NATS KV.

Models load at start-up (the sentence encoder, spaCy's NER, the classifier
heads); policies are an in-memory copy of the policies bucket kept current by
a watch, so a saved policy is live within a moment and no check reads KV.
Every verdict is published as a GuardrailEvent.
"""

from __future__ import annotations

from guardrails.checker import Checker
from guardrails.grpc_api import GuardrailsServicer
from guardrails.models import load_models, warm_up
from guardrails.scanners.registry import ScannerCache
from guardrails.settings import GuardrailsSettings
from llmops.bus.publisher import EventPublisher
from llmops.guardrails.store import PolicyMirror, seed_default_policy
from llmops.logging import get_logger
from llmops.service import Loaded, ServiceApp
from llmops.v1 import guardrails_pb2, guardrails_pb2_grpc

log = get_logger(__name__)
STAGE = "guardrails"
SERVICE_NAME = guardrails_pb2.DESCRIPTOR.services_by_name["Guardrails"].full_name


def create_app(settings: GuardrailsSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.guardrails_addr,
        metrics_port=settings.guardrails_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    scanners: Loaded[ScannerCache] = Loaded("the guardrail models")
    events: Loaded[EventPublisher] = Loaded("the event publisher")
    policies = PolicyMirror()
    checker = Checker(scanners, policies, events, settings.guardrails_workers)

    async def load() -> None:
        models = load_models(settings)
        warm_up(models)  # before SERVING: the first request must not pay for it
        scanners.set(ScannerCache(models))
        publisher = EventPublisher(app.js, STAGE)
        publisher.start()
        events.set(publisher)
        if await seed_default_policy(app.js, settings.guardrails_default_policy_file):
            log.info("guardrails.default_policy_installed")
        await policies.start(app.js)

    async def close() -> None:
        await checker.close()
        await policies.stop()
        publisher = events.take()
        if publisher is not None:
            await publisher.stop()

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_grpc(
        lambda server: guardrails_pb2_grpc.add_GuardrailsServicer_to_server(
            GuardrailsServicer(settings, policies, checker), server
        )
    )
    return app
