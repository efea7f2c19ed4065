"""Evaluation benchmark: offline runs through the real chat path, scorer cost per item, and
the online scorer and drift detector (bench/eval_online.py, bench/eval_drift.py).

    .venv/bin/python bench/evaluation.py           # ~3 minutes
    .venv/bin/python bench/evaluation.py --quick   # fewer items and trials (~1 minute)

1. Offline: `llmops up` (Triton's extractive answerer), the sample documents ingested, the
   golden set of tests/data/evaluation repeated to N items (distinct ids), one run_eval at
   the given concurrency: items/s end to end (gateway -> retrieval -> Triton, then every
   scorer, every event published with acks).
2. Scorer time per item on the run's own answers, one item at a time: the reference
   metrics in-process (EM, F1, ROUGE-L, BLEU, chrF, context precision/recall) and the
   service scorers (embedding similarity, answer relevance, groundedness over gRPC).
3. bench/eval_online.run() and bench/eval_drift.run(): online scoring throughput, the
   drift detector's detection and false-alarm rates (see those files).

Figures are printed and written to bench/results/evaluation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path[:0] = [str(ROOT), str(BENCH), str(ROOT / "libs")]

import nats  # noqa: E402
from tests.support import run_platform  # noqa: E402

import eval_drift  # noqa: E402
import eval_online  # noqa: E402
from llmops.apikeys import KeyAdmin  # noqa: E402
from llmops.docclient import DocumentClient, document_from_file  # noqa: E402
from llmops.evaluation.datasets import Dataset, DatasetItem, parse_jsonl  # noqa: E402
from llmops.evaluation.metrics import reference_scores  # noqa: E402
from llmops.evaluation.runner import Clients, RunSettings, run_eval  # noqa: E402
from llmops.evaluation.scorers import ServiceScorer  # noqa: E402
from llmops.grpcutil import channel  # noqa: E402
from llmops.v1 import (  # noqa: E402
    embedding_pb2_grpc,
    gateway_pb2_grpc,
    guardrails_pb2_grpc,
    retrieval_pb2_grpc,
)

GOLDEN = ROOT / "tests" / "data" / "evaluation" / "golden.jsonl"
DOCS = ROOT / "tests" / "data" / "docs"
TENANT = "bench-eval"


def golden_items(count: int) -> list[DatasetItem]:
    base = parse_jsonl(GOLDEN.read_text())
    return [
        dataclasses.replace(base[i % len(base)], id=f"{base[i % len(base)].id}#{i}")
        for i in range(count)
    ]


async def _ingest(nats_url: str) -> None:
    client = await DocumentClient.connect(nats_url)
    try:
        await client.watch()
        paths = sorted(DOCS.iterdir())
        ids = [f"tests/data/docs/{p.name}" for p in paths]
        for path, doc_id in zip(paths, ids, strict=True):
            await client.publish(document_from_file(path, doc_id, TENANT, "default", {}))
        await client.wait_for([(TENANT, d) for d in ids], timeout_s=180)
    finally:
        await client.close()


async def offline_part(
    addr: dict[str, str], nats_url: str, items: int, concurrency: int
) -> dict[str, float]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    key = await KeyAdmin(js).create_key(TENANT, "bench")
    await _ingest(nats_url)
    channels = {n: channel(addr[n]) for n in ("gateway", "retrieval", "embedding", "guardrails")}
    try:
        scorer = ServiceScorer(
            embedding_pb2_grpc.EmbeddingStub(channels["embedding"]),
            guardrails_pb2_grpc.GuardrailsStub(channels["guardrails"]),
        )
        clients = Clients(
            gateway=gateway_pb2_grpc.GatewayStub(channels["gateway"]),
            retrieval=retrieval_pb2_grpc.RetrievalStub(channels["retrieval"]),
            scorer=scorer,
            js=js,
            api_key=key.key,
            tenant=TENANT,
            key_id=key.record.key_id,
        )
        await asyncio.sleep(1.0)  # the gateway learns the new key
        warm = Dataset(TENANT, "bench", "warmup", tuple(golden_items(8)))
        await run_eval(warm, RunSettings(concurrency=concurrency), clients)
        dataset = Dataset(TENANT, "bench", "bench", tuple(golden_items(items)))
        began = time.perf_counter()
        run = await run_eval(dataset, RunSettings(concurrency=concurrency), clients)
        wall = time.perf_counter() - began
        answered = [i for i in run.items if not i.failed]
        by_id = {i.id: i for i in dataset.items}
        reference_ms, service_ms = [], []
        for result in answered[:64]:
            item = by_id[result.item_id]
            t0 = time.perf_counter()
            reference_scores(
                result.answer, item.expected_answer, result.cited_docs, item.expected_sources
            )
            t1 = time.perf_counter()
            await asyncio.gather(
                scorer.similarity(result.answer, item.expected_answer),
                scorer.reference_free(TENANT, item.question, result.answer, [result.answer]),
            )
            t2 = time.perf_counter()
            reference_ms.append((t1 - t0) * 1000)
            service_ms.append((t2 - t1) * 1000)
        return {
            "offline_items": float(len(run.items)),
            "offline_failed_items": float(run.failed_items),
            "offline_concurrency": float(concurrency),
            "offline_items_per_s": len(run.items) / wall,
            "offline_item_latency_p50_ms": statistics.median(
                i.scores["latency_ms"] for i in answered
            ),
            "reference_scorers_ms_per_item": statistics.median(reference_ms),
            "service_scorers_ms_per_item": statistics.median(service_ms),
            "offline_token_f1": run.summary.get("token_f1", 0.0),
        }
    finally:
        for ch in channels.values():
            await ch.close()
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer items and trials")
    parser.add_argument(
        "--items", type=int, default=0, help="offline items (default 200; 48 quick)"
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "evaluation.json")
    args = parser.parse_args()
    items = args.items or (48 if args.quick else 200)
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory() as tmp, run_platform(Path(tmp) / "data") as platform:
        addr = {n: platform.addr(n) for n in ("gateway", "retrieval", "embedding", "guardrails")}
        results["offline"] = asyncio.run(
            offline_part(addr, platform.nats_url, items, args.concurrency)
        )
    results["online"] = eval_online.run(args.quick)
    results["drift"] = eval_drift.run(args.quick)
    for part in ("offline", "online", "drift"):
        print(f"\n{part}")
        for name, value in results[part].items():
            print(f"  {name:42s} {value:12.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
