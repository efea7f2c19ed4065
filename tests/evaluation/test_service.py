"""The evaluation service as a process beside real embedding, guardrails and retrieval
services on a real nats-server: the rig every evaluation service test (and
bench/eval_online.py) shares, and the service's own start-up and API checks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from llmops.bus.topology import DOCS_EMBEDDED, INTERACTION_EVENTS, ensure_topology
from llmops.guardrails.store import PolicyStore
from llmops.v1 import (
    documents_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    evaluation_pb2,
    evaluation_pb2_grpc,
    events_pb2,
    gateway_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.support import ServiceProcess, nats_server

# Tenants with their own share (the rest get DEFAULT_RATE); drift tenants score nothing,
# so their tests cost only the embeddings of their questions.
DEFAULT_RATE = 0.3
RATES = {"scored": 1.0, "bench": 1.0, "drift-shift": 0.0, "drift-same": 0.0, "drift-restart": 0.0}
RECENT_S = 600.0
REFERENCE_S = 3600.0
MIN_SAMPLES = 30
EVALUATION_ENV = {
    "LLMOPS_EVALUATION_SAMPLE_RATE": str(DEFAULT_RATE),
    "LLMOPS_EVALUATION_SAMPLE_RATES": json.dumps(RATES),
    "LLMOPS_DRIFT_RECENT_S": str(RECENT_S),
    "LLMOPS_DRIFT_REFERENCE_S": str(REFERENCE_S),
    "LLMOPS_DRIFT_INTERVAL_S": "2",
    "LLMOPS_DRIFT_MIN_SAMPLES": str(MIN_SAMPLES),
    "LLMOPS_DRIFT_MAX_SAMPLES": "120",
    "LLMOPS_DRIFT_PERMUTATIONS": "300",
    "LLMOPS_MAX_DELIVER": "2",  # a failing interaction reaches the dead letters quickly
}


@dataclass
class Rig:
    """NATS, the three services online scoring calls, and the evaluation service."""

    nc: Client
    js: JetStreamContext
    upstreams: list[ServiceProcess]
    evaluation: ServiceProcess
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, data: Path, **evaluation_env: str) -> AsyncIterator[Rig]:
        with nats_server(data / "nats") as url:
            nc = await nats.connect(url)
            await ensure_topology(nc.jetstream())
            upstreams = [
                ServiceProcess(name, url, data / name)
                for name in ("embedding", "guardrails", "retrieval")
            ]
            addrs = {f"LLMOPS_{s.name.upper()}_ADDR": s.addr for s in upstreams}
            evaluation = ServiceProcess(
                "evaluation",
                url,
                data / "evaluation",
                **addrs,
                **{**EVALUATION_ENV, **evaluation_env},
            )
            for service in upstreams:
                service.env.update(addrs)  # retrieval embeds queries with this embedding
            rig = cls(nc, nc.jetstream(), upstreams, evaluation)
            try:
                for service in [*upstreams, evaluation]:
                    service.start()
                for service in [*upstreams, evaluation]:
                    await service.wait_healthy(timeout_s=180)
                yield rig
            finally:
                for service in [evaluation, *upstreams]:
                    service.stop()
                    await service.close()
                await nc.close()

    def upstream(self, name: str) -> ServiceProcess:
        return next(s for s in self.upstreams if s.name == name)

    @property
    def drift(self) -> evaluation_pb2_grpc.EvaluationStub:
        return evaluation_pb2_grpc.EvaluationStub(self.evaluation.channel)

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalStub:
        return retrieval_pb2_grpc.RetrievalStub(self.upstream("retrieval").channel)

    async def restart_evaluation(self, sig: int = signal.SIGKILL) -> None:
        self.evaluation.stop(sig)
        await self.evaluation.close()
        self.evaluation.start()
        await self.evaluation.wait_healthy(timeout_s=120)

    def counters(self) -> dict[str, float]:
        """The online stage's outcome counters, from the service's /metrics."""
        port = self.evaluation.env["LLMOPS_EVALUATION_METRICS_PORT"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        pattern = r'^llmops_evaluation_interactions_total\{outcome="(\w+)"\} (\S+)$'
        return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}

    async def publish(self, events: Iterable[events_pb2.InteractionEvent]) -> None:
        pending = [
            self.js.publish(
                INTERACTION_EVENTS, e.SerializeToString(), headers={"Nats-Msg-Id": e.event_id}
            )
            for e in events
        ]
        for start in range(0, len(pending), 500):
            await asyncio.gather(*pending[start : start + 500])

    async def index(self, tenant: str, doc_id: str, texts: Sequence[str]) -> list[str]:
        """Put a document's chunks into retrieval (as the embedding stage would); their ids."""
        stub = embedding_pb2_grpc.EmbeddingStub(self.upstream("embedding").channel)
        vectors = await stub.Embed(embedding_pb2.EmbedRequest(texts=list(texts)), timeout=30)
        ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant}/{doc_id}/{i}")) for i in texts]
        document = documents_pb2.ChunkedDocument(
            tenant=tenant, doc_id=doc_id, collection="default", version=1, title=doc_id
        )
        embedded = documents_pb2.EmbeddedDocument(
            document=document,
            chunks=[
                documents_pb2.EmbeddedChunk(
                    chunk=documents_pb2.Chunk(chunk_id=chunk_id, index=i, text=text),
                    dense=vector.values,
                )
                for i, (chunk_id, text, vector) in enumerate(
                    zip(ids, texts, vectors.vectors, strict=True)
                )
            ],
        )
        await self.js.publish(DOCS_EMBEDDED, embedded.SerializeToString())
        request = retrieval_pb2.GetChunksRequest(tenant=tenant, chunk_ids=ids)
        deadline = time.monotonic() + 30
        while len((await self.retrieval.GetChunks(request, timeout=5)).chunks) < len(ids):
            assert time.monotonic() < deadline, "retrieval never indexed the document"
            await asyncio.sleep(0.1)
        return ids


def interaction(
    tenant: str,
    question: str = "How often should I oil my bicycle chain?",
    answer: str = "Oil the chain every 300 km and wipe off the excess with a rag.",
    *,
    at: float | None = None,
    request_id: str | None = None,
    **fields: object,
) -> events_pb2.InteractionEvent:
    """An answered gateway request as the gateway publishes it (text kept in full)."""
    values: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "tenant": tenant,
        "key_id": "k-test",
        "request_id": request_id or str(uuid.uuid4()),
        "trace_id": uuid.uuid4().hex,
        "api": "grpc.chat",
        "model_used": "triton/tiny",
        "status": "OK",
        "cache": gateway_pb2.CACHE_STATUS_MISS,
        "text_retention": events_pb2.TEXT_RETENTION_FULL,
        "question": question,
        "answer": answer,
    }
    event = events_pb2.InteractionEvent(**{**values, **fields})  # type: ignore[arg-type]
    event.time.FromNanoseconds(int((at if at is not None else time.time()) * 1e9))
    return event


_RIGS: list[Rig] = []


@pytest.fixture(scope="session")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    """One rig for every module that imports this fixture: pytest would otherwise build one
    per importing module (each keeps its own copy of an imported fixture)."""
    if _RIGS:
        yield _RIGS[0]
        return
    async with Rig.running(tmp_path_factory.mktemp("evaluation")) as started:
        _RIGS.append(started)
        yield started


async def test_start_up_seeds_the_evaluation_policy_flagging_only(rig: Rig) -> None:
    policy = await (await PolicyStore.open(rig.js)).get("default", "evaluation")
    assert policy is not None and policy.version >= 1
    rules = {**policy.input.scanners(), **policy.context.scanners(), **policy.output.scanners()}
    assert {"groundedness", "toxicity", "pii"} <= set(policy.output.scanners())
    assert {rule.action for rule in rules.values()} == {"flag"}


async def test_check_drift_says_why_a_tenant_without_data_is_skipped(rig: Rig) -> None:
    reply = await rig.drift.CheckDrift(
        evaluation_pb2.CheckDriftRequest(tenant="nobody-here"), timeout=30
    )
    assert list(reply.results) == []
    assert reply.skipped == [
        f"questions: 0 reference and 0 recent samples, {MIN_SAMPLES} needed on each side"
    ]


async def test_check_drift_refuses_a_malformed_tenant(rig: Rig) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rig.drift.CheckDrift(evaluation_pb2.CheckDriftRequest(tenant="No Such!"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


Decoded = TypeVar("Decoded", bound=Message)


@contextlib.asynccontextmanager
async def published_from_now(
    rig: Rig, subject: str, message: type[Decoded]
) -> AsyncIterator[list[Decoded]]:
    """Every `message` published on `subject` from now on, appended as it comes."""
    seen: list[Decoded] = []

    async def collect(msg: Msg) -> None:
        seen.append(message.FromString(msg.data))

    sub = await rig.js.subscribe(
        subject,
        cb=collect,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    try:
        yield seen
    finally:
        await sub.unsubscribe()
