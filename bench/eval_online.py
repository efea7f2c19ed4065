"""Online evaluation benchmark: how many interactions/s the evaluation service scores, and
what one item costs the scorer.

    .venv/bin/python bench/eval_online.py            # 400 interactions (~1 minute)
    .venv/bin/python bench/eval_online.py --quick    # 60

The real services as processes on a real nats-server (the rig of
tests/evaluation/test_service.py: embedding, guardrails, retrieval, evaluation), tenant
`bench` sampled at 1.0. Throughput: N synthetic interactions, each citing two indexed
passages, published at once; the clock runs until all 4 N EvaluationEvents
(groundedness, answer relevance, refusal, guardrail flag) are on the bus. Per item: the
same scorer (`ServiceScorer.reference_free`, one embedding call and one guardrails check)
called one item at a time from here, p50 and p95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "services"), str(ROOT / "libs")]

from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402
from tests.evaluation.test_service import Rig, interaction  # noqa: E402

from llmops.bus.topology import EVALUATION_EVENTS  # noqa: E402
from llmops.evaluation.scorers import ServiceScorer  # noqa: E402
from llmops.v1 import (  # noqa: E402
    embedding_pb2_grpc,
    events_pb2,
    gateway_pb2,
    guardrails_pb2_grpc,
)

TENANT = "bench"
PASSAGES = [
    "Oil the chain every 300 km and wipe off the excess with a clean rag.",
    "Check the tyre pressure weekly; road tyres need 6 to 8 bar, mountain bike tyres 2.",
]
QUESTIONS = [
    "How often should I oil my chain?",
    "What tyre pressure does a road bike need?",
    "How do I clean my chain after a wet ride?",
]
ANSWERS = [
    "Oil the chain every 300 km and wipe off the excess with a clean rag.",
    "Road tyres need 6 to 8 bar; check the pressure every week.",
    "Rinse it, dry it, then oil the chain and wipe off the excess.",
]


async def _throughput(rig: Rig, n: int, chunk_ids: list[str]) -> dict[str, float]:
    citations = [gateway_pb2.Citation(number=i + 1, chunk_id=c) for i, c in enumerate(chunk_ids)]
    events = [
        interaction(TENANT, QUESTIONS[i % 3], ANSWERS[i % 3], citations=citations) for i in range(n)
    ]
    wanted = {e.request_id for e in events}
    done = asyncio.Event()
    count = [0]

    async def seen(msg: object) -> None:
        event = events_pb2.EvaluationEvent.FromString(msg.data)  # type: ignore[attr-defined]
        if event.request_id in wanted:
            count[0] += 1
            if count[0] >= 4 * n:
                done.set()

    sub = await rig.js.subscribe(
        EVALUATION_EVENTS,
        cb=seen,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    started = time.perf_counter()
    await rig.publish(events)
    await asyncio.wait_for(done.wait(), timeout=600)
    took = time.perf_counter() - started
    await sub.unsubscribe()
    return {"interactions": n, "seconds": took, "interactions_per_s": n / took}


async def _per_item(rig: Rig, n: int) -> dict[str, float]:
    scorer = ServiceScorer(
        embedding_pb2_grpc.EmbeddingStub(rig.upstream("embedding").channel),
        guardrails_pb2_grpc.GuardrailsStub(rig.upstream("guardrails").channel),
    )
    times = []
    for i in range(n):
        started = time.perf_counter()
        await scorer.reference_free(TENANT, QUESTIONS[i % 3], ANSWERS[i % 3], PASSAGES)
        times.append((time.perf_counter() - started) * 1000)
    ordered = sorted(times)
    return {
        "scorer_ms_p50": statistics.median(ordered),
        "scorer_ms_p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
    }


async def _run(quick: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="eval-online-") as tmp:
        async with Rig.running(Path(tmp), LLMOPS_EVALUATION_CONCURRENCY="16") as rig:
            chunk_ids = await rig.index(TENANT, "manual", PASSAGES)
            await _throughput(rig, 10, chunk_ids)  # warm-up: channels, caches, policy mirror
            per_item = await _per_item(rig, 20 if quick else 100)
            figures = await _throughput(rig, 60 if quick else 400, chunk_ids)
    return {**figures, **per_item}


def run(quick: bool = False) -> dict[str, float]:
    return asyncio.run(_run(quick))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = run(args.quick)
    print(json.dumps(figures, indent=2))
    print(
        f"online scoring keeps up with {figures['interactions_per_s']:.1f} interactions/s"
        f" ({figures['interactions']:.0f} in {figures['seconds']:.1f} s); scorer per item"
        f" p50 {figures['scorer_ms_p50']:.1f} ms, p95 {figures['scorer_ms_p95']:.1f} ms"
    )


if __name__ == "__main__":
    main()
