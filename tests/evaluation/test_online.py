"""Online scoring: the share sampled per tenant, deterministic by request id; the scores and
prompt fields of a sampled interaction; what is skipped; a poison message dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Callable

from nats.js.api import ConsumerConfig, DeliverPolicy

from evaluation.sampling import share_of
from llmops.bus.topology import DLQ, EVALUATION_EVENTS, INTERACTION_EVENTS
from llmops.v1 import events_pb2, gateway_pb2, guardrails_pb2
from tests.evaluation.test_service import DEFAULT_RATE, Rig, interaction, published_from_now, rig

__all__ = ["rig"]  # the shared rig fixture


def evaluations(
    rig: Rig,
) -> contextlib.AbstractAsyncContextManager[list[events_pb2.EvaluationEvent]]:
    """Every EvaluationEvent published from now on, as they come."""
    return published_from_now(rig, EVALUATION_EVENTS, events_pb2.EvaluationEvent)


async def until(condition: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_share_sampled_is_the_tenants_rate_within_binomial_bounds(rig: Rig) -> None:
    """Failed requests are cheap to sample: chosen ones count as `failed`, the rest as
    `not_sampled`, so the share is read off the service's counters."""
    n = 2000
    tenant = "sampled"
    events = [
        interaction(tenant, request_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"s{i}")), status="X")
        for i in range(n)
    ]
    before = rig.counters()
    await rig.publish(events)

    def delta(outcome: str) -> float:
        return rig.counters().get(outcome, 0.0) - before.get(outcome, 0.0)

    await until(lambda: delta("failed") + delta("not_sampled") >= n, what="every event counted")
    chosen = delta("failed")
    bound = 4.5 * math.sqrt(n * DEFAULT_RATE * (1 - DEFAULT_RATE))
    assert abs(chosen - n * DEFAULT_RATE) <= bound
    assert chosen == sum(share_of(e.request_id) < DEFAULT_RATE for e in events)


async def test_the_choice_follows_the_request_id_whatever_the_delivery(rig: Rig) -> None:
    tenant = "determinism"
    request_ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"d{i}")) for i in range(30)]
    expected = {r for r in request_ids if share_of(r) < DEFAULT_RATE}
    assert 0 < len(expected) < len(request_ids)
    async with evaluations(rig) as seen:
        # Each request twice, as separate events (a replay, another replica): same choice.
        for _ in range(2):
            await rig.publish(interaction(tenant, request_id=r) for r in request_ids)
        wanted = 2 * len(expected)

        def scored() -> set[str]:
            return {e.request_id for e in seen if e.tenant == tenant}

        await until(
            lambda: sum(e.tenant == tenant and e.evaluator == "refusal" for e in seen) >= wanted,
            what="both copies of every chosen request scored",
        )
        assert scored() == expected


async def test_a_sampled_interaction_gets_every_score_with_its_prompt_fields(rig: Rig) -> None:
    tenant = "scored"
    passages = [
        "Oil the chain every 300 km and wipe off the excess with a clean rag.",
        "Check the tyre pressure weekly; road tyres need 6 to 8 bar.",
    ]
    chunk_ids = await rig.index(tenant, "manual", passages)
    event = interaction(
        tenant,
        citations=[
            gateway_pb2.Citation(number=i + 1, chunk_id=c, doc_id="manual")
            for i, c in enumerate(chunk_ids)
        ],
        prompt="support",
        prompt_version="3",
        prompt_label="production",
        prompt_arm="v3",
        guardrails=guardrails_pb2.GuardrailSummary(policy="default/default", fired=["pii"]),
    )
    async with evaluations(rig) as seen:
        await rig.publish([event])
        await until(lambda: len([e for e in seen if e.request_id == event.request_id]) >= 4)
        await asyncio.sleep(0.5)  # nothing more comes
        mine = {e.evaluator: e for e in seen if e.request_id == event.request_id}
    assert set(mine) == {"groundedness", "answer_relevance", "refusal", "guardrail_flagged"}
    assert mine["groundedness"].score >= 0.9 and mine["groundedness"].passed
    assert mine["answer_relevance"].score > 0.5
    assert mine["refusal"].score == 0.0 and mine["refusal"].passed
    assert mine["guardrail_flagged"].score == 1.0 and mine["guardrail_flagged"].reason == "pii"
    assert not mine["guardrail_flagged"].passed
    for e in mine.values():
        assert (e.kind, e.run_id, e.tenant, e.trace_id) == (
            "online",
            "online",
            tenant,
            event.trace_id,
        )
        assert (e.prompt, e.prompt_version, e.prompt_label, e.prompt_arm) == (
            "support",
            "3",
            "production",
            "v3",
        )
        assert e.model == "triton/tiny" and e.time == event.time


async def test_unscorable_interactions_are_counted_not_scored(rig: Rig) -> None:
    """Text retention off, a cache hit and an answer without passages-free text: none is
    scored; a scorable one after them is (so they were handled, not still queued)."""
    tenant = "scored"
    off = interaction(tenant, question="", answer="", text_retention=events_pb2.TEXT_RETENTION_OFF)
    cached = interaction(tenant, cache=gateway_pb2.CACHE_STATUS_EXACT_HIT)
    refused = interaction(tenant, status="RESOURCE_EXHAUSTED", answer="")
    sentinel = interaction(tenant, answer="I cannot help with that request.")
    before = rig.counters()
    async with evaluations(rig) as seen:
        await rig.publish([off, cached, refused, sentinel])
        await until(lambda: any(e.request_id == sentinel.request_id for e in seen))
        skipped = {off.request_id, cached.request_id, refused.request_id}
        assert not [e for e in seen if e.request_id in skipped]
        refusal = next(
            e for e in seen if e.request_id == sentinel.request_id and e.evaluator == "refusal"
        )
        assert refusal.score == 1.0 and not refusal.passed
        # no passages cited: groundedness cannot be judged and is left out
        assert not [
            e for e in seen if e.request_id == sentinel.request_id and e.evaluator == "groundedness"
        ]
    after = rig.counters()
    for outcome in ("no_text", "cache_hit", "failed"):
        assert after.get(outcome, 0) - before.get(outcome, 0) >= 1, outcome


async def test_a_malformed_interaction_is_dead_lettered_and_the_stream_goes_on(rig: Rig) -> None:
    letters: list[events_pb2.DeadLetter] = []

    async def collect(msg: object) -> None:
        letters.append(events_pb2.DeadLetter.FromString(msg.data))  # type: ignore[attr-defined]

    sub = await rig.js.subscribe(
        f"{DLQ}.evaluation",
        cb=collect,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    try:
        after = interaction("scored")
        async with evaluations(rig) as seen:
            await rig.js.publish(INTERACTION_EVENTS, b"\xff\xfe not a protobuf")
            await rig.publish([after])
            await until(lambda: bool(letters), what="the dead letter")
            await until(lambda: any(e.request_id == after.request_id for e in seen))
    finally:
        await sub.unsubscribe()
    assert letters[0].stage == "evaluation" and letters[0].payload == b"\xff\xfe not a protobuf"
    assert "InteractionEvent" in letters[0].reason
