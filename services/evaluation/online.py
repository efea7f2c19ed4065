"""The online stage: sampled interactions scored with the reference-free metrics.

For each chosen interaction the cited passages' text comes from retrieval
(`GetChunks`: citations carry chunk ids only), the scorer judges the answer
(groundedness, answer relevance, refusal) and the guardrail summary adds
`guardrail_flagged`; one EvaluationEvent per evaluator is published, and the
interaction is acked only once JetStream has taken them all. Event ids derive
from the interaction and the evaluator, so a redelivery publishes duplicates
JetStream drops.

A failed upstream call fails only its interaction: the stage runner redelivers
it with backoff and, after `max_deliver` attempts, dead-letters it on
`llmops.dlq.evaluation` with the reason (replayable once the cause is fixed);
the rest of the batch is acked as usual, so the stream never stalls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence

from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from evaluation.sampling import Sampler, unscorable
from llmops.bus.codec import MalformedMessage, decode
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import EVALUATION_EVENTS
from llmops.evaluation.scorers import ServiceScorer
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import events_pb2, retrieval_pb2, retrieval_pb2_grpc

log = get_logger(__name__)
RUN_ID = "online"
KIND = "online"
GUARDRAIL_FLAGGED = "guardrail_flagged"
DEFAULT_TENANT = "default"
# An answer passes an evaluator at or above these; refusals and flags pass below 0.5.
PASS_AT = {"groundedness": 0.5, "answer_relevance": 0.3}
FAIL_AT = {"refusal": 0.5, GUARDRAIL_FLAGGED: 0.5}
_ID_SPACE = uuid.UUID("3f1d9a52-6c0b-4e8e-9b7a-2d5c8e4f1a07")

INTERACTIONS = Counter(
    "llmops_evaluation_interactions_total",
    "interactions seen by online evaluation, by outcome",
    ["outcome"],  # scored | not_sampled | failed | cache_hit | no_text | error
)
SCORE_SECONDS = Histogram(
    "llmops_evaluation_score_seconds",
    "time to score one interaction (passages, scorer, publish)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def passed(evaluator: str, score: float) -> bool:
    if evaluator in FAIL_AT:
        return score < FAIL_AT[evaluator]
    return score >= PASS_AT.get(evaluator, 0.5)


class OnlineEvaluator:
    def __init__(
        self,
        sampler: Sampler,
        scorer: Loaded[ServiceScorer],
        retrieval: Loaded[retrieval_pb2_grpc.RetrievalStub],
        js: Callable[[], JetStreamContext],
        *,
        concurrency: int,
        timeout_s: float,
    ) -> None:
        self._sampler = sampler
        self._scorer = scorer
        self._retrieval = retrieval
        self._js = js
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s

    async def handle(self, batch: Sequence[Delivery]) -> None:
        chosen: list[tuple[Delivery, events_pb2.InteractionEvent]] = []
        for delivery in batch:
            try:
                event = decode(delivery.data, delivery.headers, events_pb2.InteractionEvent)
            except MalformedMessage as exc:
                delivery.fail(PoisonMessage(str(exc)))
                continue
            delivery.tenant = event.tenant
            outcome = "not_sampled" if not self._sampler.chosen(event) else unscorable(event)
            if outcome is not None:
                INTERACTIONS.labels(outcome).inc()
                continue
            chosen.append((delivery, event))
        await asyncio.gather(*(self._score(d, e) for d, e in chosen))

    async def _score(self, delivery: Delivery, event: events_pb2.InteractionEvent) -> None:
        async with self._slots:
            started = time.perf_counter()
            try:
                await self._publish(await self.evaluate(event))
            except Exception as exc:  # the runner retries it, then dead-letters it
                delivery.fail(exc)
                INTERACTIONS.labels("error").inc()
                log.warning(
                    "evaluation.score_failed",
                    tenant=event.tenant,
                    request_id=event.request_id,
                    deliveries=delivery.deliveries,
                    error=repr(exc),
                )
                return
            SCORE_SECONDS.observe(time.perf_counter() - started)
            INTERACTIONS.labels("scored").inc()

    async def evaluate(
        self, event: events_pb2.InteractionEvent
    ) -> list[events_pb2.EvaluationEvent]:
        """One EvaluationEvent per evaluator for a scorable interaction."""
        tenant = event.tenant or DEFAULT_TENANT
        passages = await self._passages(tenant, event)
        scores = await self._scorer.value.reference_free(
            tenant, event.question, event.answer, passages
        )
        fired = list(event.guardrails.fired)
        results = [_evaluation(event, name, score) for name, score in scores.items()]
        flagged = _evaluation(event, GUARDRAIL_FLAGGED, 1.0 if fired else 0.0)
        flagged.reason = ",".join(fired)
        return [*results, flagged]

    async def _passages(self, tenant: str, event: events_pb2.InteractionEvent) -> list[str]:
        """The cited chunks' text; chunks deleted since the answer are simply missing."""
        ids = list(dict.fromkeys(c.chunk_id for c in event.citations if c.chunk_id))
        if not ids:
            return []
        reply = await self._retrieval.value.GetChunks(
            retrieval_pb2.GetChunksRequest(tenant=tenant, chunk_ids=ids), timeout=self._timeout_s
        )
        return [chunk.text for chunk in reply.chunks]

    async def _publish(self, evaluations: Sequence[events_pb2.EvaluationEvent]) -> None:
        js = self._js()
        await asyncio.gather(
            *(
                js.publish(
                    EVALUATION_EVENTS,
                    e.SerializeToString(),
                    headers={"Nats-Msg-Id": e.event_id},
                )
                for e in evaluations
            )
        )


def _evaluation(
    event: events_pb2.InteractionEvent, evaluator: str, score: float
) -> events_pb2.EvaluationEvent:
    """Timed as the interaction, so it lands in the same drift window and joins it by id."""
    return events_pb2.EvaluationEvent(
        event_id=str(uuid.uuid5(_ID_SPACE, f"{event.event_id or event.request_id}:{evaluator}")),
        time=event.time,
        tenant=event.tenant or DEFAULT_TENANT,
        request_id=event.request_id,
        trace_id=event.trace_id,
        run_id=RUN_ID,
        evaluator=evaluator,
        score=score,
        passed=passed(evaluator, score),
        model=event.model_used,
        prompt=event.prompt,
        prompt_version=event.prompt_version,
        prompt_label=event.prompt_label,
        prompt_arm=event.prompt_arm,
        kind=KIND,
    )
