"""Drift in the service: a shifted question stream raises a DriftEvent, an unshifted one does
not, score distributions are tested too, and a restart rebuilds the windows from the stream.

Events carry their own time, so the reference window (the hour before the last ten
minutes, in the rig) is filled by publishing interactions timed in it."""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest

from llmops.bus.topology import DRIFT_EVENTS, EVALUATION_EVENTS
from llmops.v1 import evaluation_pb2, events_pb2
from tests.evaluation.test_service import (
    RECENT_S,
    REFERENCE_S,
    Rig,
    interaction,
    published_from_now,
    rig,
)

__all__ = ["rig"]  # the shared rig fixture
N = 45  # per window, above the rig's minimum of 30

BIKE_VERBS = ("adjust", "clean", "replace", "lubricate", "tighten", "inspect", "fix", "align")
BIKE_PARTS = ("chain", "brakes", "derailleur", "saddle", "pedals", "spokes", "tyres", "cassette")
BIKES = ("road bike", "mountain bike", "e-bike", "commuter bike", "gravel bike")
TAX_VERBS = ("file", "amend", "download", "pay", "dispute", "correct")
TAX_DOCS = ("invoice", "tax return", "VAT statement", "payroll report", "expense claim")
PERIODS = ("March", "the second quarter", "last year", "2023", "the current month")


def bike_questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"How do I {rng.choice(BIKE_VERBS)} the {rng.choice(BIKE_PARTS)} on my {rng.choice(BIKES)}?"
        for _ in range(n)
    ]


def tax_questions(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"How can I {rng.choice(TAX_VERBS)} my {rng.choice(TAX_DOCS)} for {rng.choice(PERIODS)}?"
        for _ in range(n)
    ]


def reference_times(n: int) -> list[float]:
    """Spread over the reference window, clear of its edges."""
    now = time.time()
    return [now - RECENT_S - 120 - i * (REFERENCE_S - 300) / n for i in range(n)]


def recent_times(n: int) -> list[float]:
    now = time.time()
    return [now - 10 - i * (RECENT_S - 250) / n for i in range(n)]


async def publish_questions(rig: Rig, tenant: str, reference: list[str], recent: list[str]) -> None:
    await rig.publish(
        [
            *(
                interaction(tenant, q, at=t)
                for q, t in zip(reference, reference_times(N), strict=True)
            ),
            *(interaction(tenant, q, at=t) for q, t in zip(recent, recent_times(N), strict=True)),
        ]
    )


async def check(rig: Rig, tenant: str, want_questions: int = N) -> evaluation_pb2.CheckDriftReply:
    """CheckDrift once the service has read every question published for the tenant."""
    deadline = time.monotonic() + 60
    while True:
        reply: evaluation_pb2.CheckDriftReply = await rig.drift.CheckDrift(
            evaluation_pb2.CheckDriftRequest(tenant=tenant), timeout=60
        )
        questions = [r for r in reply.results if r.signal == "questions"]
        if questions and (questions[0].n_reference, questions[0].n_recent) == (
            want_questions,
            want_questions,
        ):
            return reply
        assert time.monotonic() < deadline, f"windows never filled: {reply}"
        await asyncio.sleep(0.3)


def questions_result(reply: evaluation_pb2.CheckDriftReply) -> events_pb2.DriftEvent:
    [result] = [r for r in reply.results if r.signal == "questions"]
    return result


async def test_a_shifted_question_stream_raises_a_drift_event_and_an_unshifted_one_does_not(
    rig: Rig,
) -> None:
    async with published_from_now(rig, DRIFT_EVENTS, events_pb2.DriftEvent) as drift_events:
        await publish_questions(rig, "drift-same", bike_questions(N, 1), bike_questions(N, 2))
        await publish_questions(rig, "drift-shift", bike_questions(N, 3), tax_questions(N, 4))
        same = questions_result(await check(rig, "drift-same"))
        shifted = questions_result(await check(rig, "drift-shift"))
        assert (same.method, same.drifted) == ("mmd", False) and same.p_value > same.threshold
        assert shifted.drifted and shifted.p_value <= shifted.threshold
        assert shifted.statistic > same.statistic
        # The scheduled check (every 2 s in the rig) publishes the drift, and only it.
        deadline = time.monotonic() + 30
        while not any(e.tenant == "drift-shift" for e in drift_events):
            assert time.monotonic() < deadline, "no DriftEvent for the shifted stream"
            await asyncio.sleep(0.2)
        await asyncio.sleep(4.5)  # two more scheduled checks
    raised = [e for e in drift_events if e.tenant == "drift-shift"]
    assert {(e.signal, e.method, e.drifted) for e in raised} == {("questions", "mmd", True)}
    assert not [e for e in drift_events if e.tenant == "drift-same"]
    event = raised[0]
    assert (event.n_reference, event.n_recent) == (N, N)
    window = event.recent_end.ToSeconds() - event.recent_start.ToSeconds()
    assert RECENT_S - RECENT_S / 12 - 5 <= window <= RECENT_S + 5
    assert event.reference_end == event.recent_start
    reference = event.reference_end.ToSeconds() - event.reference_start.ToSeconds()
    assert reference == pytest.approx(REFERENCE_S, abs=RECENT_S / 12)


async def test_score_distributions_are_tested_with_psi_and_ks(rig: Rig) -> None:
    tenant = "drift-shift"
    rng = random.Random(7)
    scores = [
        *((t, min(1.0, rng.gauss(0.8, 0.05))) for t in reference_times(N)),
        *((t, max(0.0, rng.gauss(0.4, 0.05))) for t in recent_times(N)),
    ]
    for i, (at, score) in enumerate(scores):
        event = events_pb2.EvaluationEvent(
            event_id=f"score-{i}", tenant=tenant, evaluator="answer_relevance", score=score,
            kind="online", run_id="online",
        )  # fmt: skip
        event.time.FromNanoseconds(int(at * 1e9))
        await rig.js.publish(EVALUATION_EVENTS, event.SerializeToString())
    deadline = time.monotonic() + 30
    while True:
        reply = await rig.drift.CheckDrift(
            evaluation_pb2.CheckDriftRequest(tenant=tenant, publish=True), timeout=60
        )
        found = {r.method: r for r in reply.results if r.signal == "score:answer_relevance"}
        if found and found["ks"].n_recent == N and found["ks"].n_reference == N:
            break
        assert time.monotonic() < deadline, f"scores never reached the windows: {reply}"
        await asyncio.sleep(0.3)
    assert set(found) == {"psi", "ks"}
    assert found["psi"].drifted and found["psi"].p_value == -1.0
    assert found["ks"].drifted and found["ks"].p_value < 0.01


async def test_a_restart_rebuilds_the_windows_from_the_stream(rig: Rig) -> None:
    tenant = "drift-restart"
    await publish_questions(rig, tenant, bike_questions(N, 5), tax_questions(N, 6))
    before = questions_result(await check(rig, tenant))
    await rig.restart_evaluation(signal.SIGKILL)
    after = questions_result(await check(rig, tenant))
    # The same samples (kept by their ids' hashes): the same windows and verdict. (The
    # statistic moves a little: int8 embeddings depend on what shares their batch.)
    assert (after.n_reference, after.n_recent) == (before.n_reference, before.n_recent) == (N, N)
    assert before.drifted and after.drifted
    assert after.statistic == pytest.approx(before.statistic, rel=0.2)
