"""Evaluation service: online scores of sampled interactions, drift watched per tenant.

Start-up stores the guardrail policy answers are scored with (`default/evaluation`)
when it never existed, opens clients of the embedding, guardrails and retrieval
services, and rebuilds the drift windows by replaying the EVENTS stream.
"""

from __future__ import annotations

import grpc

from evaluation.drift_watch import DriftWatch
from evaluation.grpc_api import EvaluationServicer
from evaluation.online import OnlineEvaluator
from evaluation.sampling import Sampler
from evaluation.settings import EvaluationSettings
from llmops.bus.topology import EVALUATION_CONSUMER
from llmops.evaluation.scorers import ServiceScorer
from llmops.grpcutil import channel
from llmops.guardrails.store import seed_policy
from llmops.logging import get_logger
from llmops.service import Loaded, ServiceApp
from llmops.v1 import (
    embedding_pb2_grpc,
    evaluation_pb2,
    evaluation_pb2_grpc,
    guardrails_pb2_grpc,
    retrieval_pb2_grpc,
)

log = get_logger(__name__)
STAGE = "evaluation"
SERVICE_NAME = evaluation_pb2.DESCRIPTOR.services_by_name["Evaluation"].full_name


def create_app(settings: EvaluationSettings) -> ServiceApp:
    app = ServiceApp(
        STAGE,
        settings,
        grpc_addr=settings.evaluation_addr,
        metrics_port=settings.evaluation_metrics_port,
        grpc_services=[SERVICE_NAME],
    )
    scorer: Loaded[ServiceScorer] = Loaded("the scorer")
    retrieval: Loaded[retrieval_pb2_grpc.RetrievalStub] = Loaded("the retrieval client")
    channels: list[grpc.aio.Channel] = []
    drift = DriftWatch(settings, scorer)
    online = OnlineEvaluator(
        Sampler(settings.evaluation_sample_rate, settings.evaluation_sample_rates),
        scorer,
        retrieval,
        lambda: app.js,
        concurrency=settings.evaluation_concurrency,
        timeout_s=settings.evaluation_timeout_s,
    )

    async def load() -> None:
        if await seed_policy(app.js, settings.evaluation_policy_file, settings.evaluation_policy):
            log.info("evaluation.policy_installed", policy=settings.evaluation_policy)
        channels.extend(
            channel(addr)
            for addr in (settings.embedding_addr, settings.guardrails_addr, settings.retrieval_addr)
        )
        embedding, guardrails, retrieval_channel = channels
        scorer.set(
            ServiceScorer(
                embedding_pb2_grpc.EmbeddingStub(embedding),
                guardrails_pb2_grpc.GuardrailsStub(guardrails),
                policy=settings.evaluation_policy,
                timeout_s=settings.evaluation_timeout_s,
            )
        )
        retrieval.set(retrieval_pb2_grpc.RetrievalStub(retrieval_channel))
        await drift.start(app.js)

    async def close() -> None:
        await drift.stop()
        for ch in channels:
            await ch.close()

    app.on_startup(load)
    app.on_shutdown(close)
    app.add_stage(EVALUATION_CONSUMER, online.handle, batch_size=settings.evaluation_batch_size)
    app.add_grpc(
        lambda server: evaluation_pb2_grpc.add_EvaluationServicer_to_server(
            EvaluationServicer(drift), server
        )
    )
    return app
