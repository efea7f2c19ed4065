"""Offline runs on a real platform (`llmops up` with Triton): every item through the gateway,
scored, published and stored in ClickHouse; a model that is down; the LLM judge through an
inference route to a local OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from llmops.bus.topology import EVAL_RUN_EVENTS, EVALUATION_EVENTS, EVENTS_STREAM
from llmops.docclient import DocumentClient, document_from_file
from llmops.evaluation.compare import RunScores, compare_runs, load_run
from llmops.evaluation.datasets import Dataset, DatasetStore, parse_jsonl
from llmops.evaluation.judge import Judge, parse_grade
from llmops.evaluation.runner import Clients, RunSettings, run_eval
from llmops.evaluation.scorers import ServiceScorer
from llmops.grpcutil import channel
from llmops.pricebook import PriceBook, add_prices
from llmops.pricing import Price
from llmops.prompts.mirror import PromptMirror
from llmops.v1 import (
    analytics_pb2_grpc,
    embedding_pb2_grpc,
    events_pb2,
    gateway_pb2_grpc,
    guardrails_pb2_grpc,
    inference_pb2_grpc,
    retrieval_pb2_grpc,
)
from tests.e2e.gateway_support import Tenant, new_tenant
from tests.inference.openai_mock import OpenAIMock, serve
from tests.support import Platform, free_port, run_platform

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "data" / "evaluation" / "golden.jsonl"
ROUTES = """\
default: answerer
aliases:
  answerer:
    - provider: triton
      model: extractive_answerer
      timeout_s: 10
      tokenizer: all-MiniLM-L6-v2/tokenizer.json
  judge:
    - {provider: openai, model: mock-judge, base_url: "JUDGE", timeout_s: 10}
  down:
    - {provider: openai, model: gone, base_url: "http://127.0.0.1:CLOSED/v1", retries: 0}
"""
M = TypeVar("M", bound=Message)


@dataclass
class Rig:
    platform: Platform
    judge: OpenAIMock
    tenant: Tenant
    dataset: Dataset
    js: JetStreamContext
    channels: dict[str, grpc.aio.Channel]

    def clients(self, judge: Judge | None = None) -> Clients:
        return Clients(
            gateway=gateway_pb2_grpc.GatewayStub(self.channels["gateway"]),
            retrieval=retrieval_pb2_grpc.RetrievalStub(self.channels["retrieval"]),
            scorer=ServiceScorer(
                embedding_pb2_grpc.EmbeddingStub(self.channels["embedding"]),
                guardrails_pb2_grpc.GuardrailsStub(self.channels["guardrails"]),
            ),
            js=self.js,
            api_key=self.tenant.key,
            tenant=self.tenant.name,
            key_id=self.tenant.key_id,
            judge=judge,
        )


@pytest.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    tmp = tmp_path_factory.mktemp("eval-runner")
    async with serve(["4\nCorrect, one detail missing."], usage=_JUDGE_USAGE) as judge:
        routes = tmp / "routes.yaml"
        routes.write_text(
            ROUTES.replace("JUDGE", judge.base_url).replace("CLOSED", str(free_port()))
        )
        with run_platform(tmp / "data", extra_env={"LLMOPS_ROUTES_FILE": str(routes)}) as platform:
            tenant = await new_tenant(platform)
            await _ingest_samples(platform, tenant.name)
            nc = await nats.connect(platform.nats_url)
            js = nc.jetstream()
            store = await DatasetStore.open(js)
            info, _ = await store.push(tenant.name, "golden", parse_jsonl(GOLDEN.read_text()), "t")
            channels = {
                name: channel(platform.addr(name))
                for name in ("gateway", "retrieval", "embedding", "guardrails", "inference")
            }
            try:
                yield Rig(
                    platform,
                    judge,
                    tenant,
                    await store.get(tenant.name, f"golden@{info.version}"),
                    js,
                    channels,
                )
            finally:
                for ch in channels.values():
                    await ch.close()
                await nc.close()


_JUDGE_USAGE = {"prompt_tokens": 120, "completion_tokens": 6}


async def _ingest_samples(platform: Platform, tenant: str) -> None:
    """The sample documents under the ids `llmops ingest tests/data/docs` gives them."""
    client = await DocumentClient.connect(platform.nats_url)
    try:
        await client.watch()
        paths = sorted((ROOT / "tests" / "data" / "docs").iterdir())
        ids = [f"tests/data/docs/{p.name}" for p in paths]
        for path, doc_id in zip(paths, ids, strict=True):
            await client.publish(document_from_file(path, doc_id, tenant, "default", {}))
        outcome = await client.wait_for([(tenant, d) for d in ids], timeout_s=120)
        assert all(o.status == events_pb2.DOCUMENT_STATUS_INDEXED for o in outcome.values())
    finally:
        await client.close()


async def _events(js: JetStreamContext, subject: str, kind: type[M], run_id: str) -> list[M]:
    """Every event of the run on `subject`, read back from the events stream."""
    sub = await js.pull_subscribe(
        subject, stream=EVENTS_STREAM.name, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    found: list[M] = []
    try:
        while True:
            try:
                batch = await sub.fetch(1000, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                return found
            for msg in batch:
                event = kind.FromString(msg.data)
                if getattr(event, "run_id", None) == run_id or event.event_id == run_id:
                    found.append(event)
    finally:
        await sub.unsubscribe()


async def test_a_run_scores_every_item_through_the_real_chat_path(rig: Rig) -> None:
    seen: list[tuple[int, int, str]] = []
    run = await run_eval(
        rig.dataset,
        RunSettings(concurrency=4, top_k=3),
        rig.clients(),
        progress=lambda done, total, item: seen.append((done, total, item.item_id)),
    )
    assert run.status == "finished" and run.failed_items == 0 and run.reason == ""
    assert [(d, t) for d, t, _ in seen] == [(i, 8) for i in range(1, 9)]
    assert sorted(i for _, _, i in seen) == sorted(item.id for item in rig.dataset.items)
    assert run.prompt_version == "1" and run.settings["model_used"] == "triton/extractive_answerer"
    assert run.settings["top_k"] == "3" and run.settings["guardrail_policy"] == "default"

    by_id = {item.item_id: item for item in run.items}
    chain = by_id["chain-oil"]
    assert "500 kilometres" in chain.answer
    assert chain.cited_docs[0] == "tests/data/docs/zephyr-bicycle.html"
    assert chain.scores["context_recall"] == 1.0 and chain.scores["token_f1"] > 0.4
    # The extractive answerer quotes the passages: grounded, relevant, never a refusal.
    for metric in ("groundedness", "answer_relevance", "similarity", "rouge_l", "chrf"):
        assert metric in run.summary, metric
    assert run.summary["groundedness"] > 0.9 and run.summary["refusal"] == 0.0
    assert run.summary["token_f1"] > 0.3 and run.summary["context_recall"] > 0.8
    assert all(item.scores["latency_ms"] > 0 for item in run.items)
    assert all(item.scores["input_tokens"] > 0 for item in run.items)

    per_item = await _events(rig.js, EVALUATION_EVENTS, events_pb2.EvaluationEvent, run.run_id)
    assert len(per_item) == sum(len(item.scores) for item in run.items)
    e = next(e for e in per_item if e.item_id == "chain-oil" and e.evaluator == "token_f1")
    assert (
        e.kind == "offline" and e.dataset == "golden" and e.dataset_version == run.dataset_version
    )
    assert e.prompt == "default" and e.prompt_version == "1" and e.tenant == rig.tenant.name
    assert e.score == pytest.approx(chain.scores["token_f1"]) and not e.passed  # < 0.5
    runs = await _events(rig.js, EVAL_RUN_EVENTS, events_pb2.EvalRunEvent, run.run_id)
    assert [r.status for r in runs] == ["running", "finished"]
    assert runs[1].items == 8 and runs[1].summary["token_f1"] == pytest.approx(
        run.summary["token_f1"]
    )
    assert runs[0].time == runs[1].time and runs[1].key_id == rig.tenant.key_id

    # The same run read back from ClickHouse compares equal to itself, item by item.
    async with channel(rig.platform.addr("analytics")) as ch:
        stored = await load_run(analytics_pb2_grpc.AnalyticsStub(ch), rig.tenant.key, run.run_id)
    assert stored.meta["status"] == "finished" and stored.meta["items"] == "8"
    assert stored.scores["token_f1"] == pytest.approx(
        RunScores.of(run).scores["token_f1"], rel=1e-5
    )
    f1 = next(c for c in compare_runs(stored, stored) if c.stats.metric == "token_f1")
    assert f1.stats.n == 8 and f1.stats.delta == 0 and f1.verdict == "no clear change"


async def test_a_model_that_is_down_fails_its_items_and_the_run_still_finishes(rig: Rig) -> None:
    run = await run_eval(rig.dataset, RunSettings(model="down", concurrency=8), rig.clients())
    assert run.status == "finished" and run.failed_items == 8
    assert all(item.error.startswith("UNAVAILABLE") for item in run.items)
    assert run.reason.startswith("8 of 8 items failed (8 UNAVAILABLE); e.g. UNAVAILABLE: ")
    assert run.summary == {}
    per_item = await _events(rig.js, EVALUATION_EVENTS, events_pb2.EvaluationEvent, run.run_id)
    assert len(per_item) == 8
    assert all(
        e.evaluator == "error" and not e.passed and "UNAVAILABLE" in e.reason for e in per_item
    )
    [_, end] = await _events(rig.js, EVAL_RUN_EVENTS, events_pb2.EvalRunEvent, run.run_id)
    assert end.status == "finished" and end.failed_items == 8 and "UNAVAILABLE" in end.reason


@contextlib.asynccontextmanager
async def _judge(rig: Rig) -> AsyncIterator[Judge]:
    prompts, prices = PromptMirror(), PriceBook()
    await prompts.start(rig.js)
    await prices.start(rig.js)
    try:
        stub = inference_pb2_grpc.InferenceStub(rig.channels["inference"])
        yield Judge(stub, prompts, prices, "judge")
    finally:
        await prompts.stop()
        await prices.stop()


async def test_the_llm_judge_grades_through_an_inference_route_and_its_cost_is_counted(
    rig: Rig,
) -> None:
    effective = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    price = Price(
        model="openai/mock-judge",
        effective_from=effective,
        input_per_mtok=Decimal(2),
        output_per_mtok=Decimal(10),
    )
    await add_prices(rig.js, [price])
    await asyncio.sleep((effective - dt.datetime.now(dt.UTC)).total_seconds() + 0.5)
    before = len(rig.judge.requests)
    async with _judge(rig) as judge:
        run = await run_eval(rig.dataset, RunSettings(concurrency=4), rig.clients(judge))
    assert run.failed_items == 0 and run.settings["judge_model"] == "judge"
    assert all(item.scores["judge"] == pytest.approx(0.8) for item in run.items)
    assert run.judge_input_tokens == 8 * 120 and run.judge_output_tokens == 8 * 6
    assert run.judge_cost_nanos == 8 * (120 * 2_000 + 6 * 10_000)  # per token: 1e9 / 1e6 x price
    # The judge saw the registry's rubric with the reference and the answer filled in.
    asked = rig.judge.requests[before:]
    assert len(asked) == 8
    rubric = asked[0].body["messages"][-1]["content"]
    assert "Reference answer: " in rubric and "Answer to grade: " in rubric
    assert any("500 kilometres" in r.body["messages"][-1]["content"] for r in asked)

    rig.judge.pieces = ["Excellent answer."]
    try:
        async with _judge(rig) as judge:
            one = Dataset(rig.dataset.tenant, "golden", rig.dataset.version, rig.dataset.items[:1])
            unparsed = await run_eval(one, RunSettings(), rig.clients(judge))
    finally:
        rig.judge.pieces = ["4\nCorrect, one detail missing."]
    [item] = unparsed.items
    assert "judge" not in item.scores and "no grade 1-5" in item.notes[0]
    assert unparsed.judge_input_tokens == 120  # an unusable grade still cost tokens


def test_grades_are_the_first_number_from_one_to_five() -> None:
    assert parse_grade("4") == 0.8
    assert parse_grade("Score: 5/5 - complete") == 1.0
    assert parse_grade("2.5 (partly)") == 0.5
    assert parse_grade("I'd say 7 out of 10") is None
    assert parse_grade("no number at all") is None
