"""Every service exposes Prometheus metrics, gRPC health and reflection."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmops.grpcutil import channel
from llmops.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support import Platform

SERVICES = {
    "ingestion": "llmops.v1.Ingestion",
    "embedding": "llmops.v1.Embedding",
    "retrieval": "llmops.v1.Retrieval",
}


def scrape(platform: Platform, service: str) -> str:
    port = platform.env[f"LLMOPS_{service.upper()}_METRICS_PORT"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample, 0 if absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_reflection_lists_the_service_and_health(platform: Platform, service: str) -> None:
    async with channel(platform.addr(service)) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=10)]
    names = {s.name for s in replies[0].list_services_response.service}
    assert {SERVICES[service], "grpc.health.v1.Health"} <= names


def test_metrics_count_pipeline_messages_and_grpc_calls(platform: Platform) -> None:
    ingest = platform.cli(
        "ingest", "tests/data/docs/aurora-heat-pump.txt", "--tenant", "m", "--wait"
    )
    assert ingest.returncode == 0, ingest.stderr
    assert platform.cli("search", "defrost", "--tenant", "m").returncode == 0
    for service in SERVICES:
        text = scrape(platform, service)
        assert sample(text, "llmops_stage_messages_total", stage=service, outcome="ok") >= 1
        assert "llmops_queue_lag_messages" in text
        assert "llmops_stage_batch_seconds_bucket" in text
    retrieval = scrape(platform, "retrieval")
    search = "/llmops.v1.Retrieval/Search"
    assert sample(retrieval, "llmops_grpc_requests_total", method=search, code="OK") >= 1
    assert sample(retrieval, "llmops_grpc_request_seconds_count", method=search) >= 1
    embedding = scrape(platform, "embedding")
    assert sample(embedding, "llmops_grpc_requests_total", method="/llmops.v1.Embedding/Embed") >= 1


async def test_failed_calls_are_counted_by_status_code(platform: Platform) -> None:
    async with channel(platform.addr("retrieval")) as ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await retrieval_pb2_grpc.RetrievalStub(ch).Search(retrieval_pb2.SearchRequest())
    method = "/llmops.v1.Retrieval/Search"
    # The status reaches the client as the server aborts; the counter follows a moment later.
    for _ in range(50):
        text = scrape(platform, "retrieval")
        if sample(text, "llmops_grpc_requests_total", method=method, code="INVALID_ARGUMENT"):
            break
        await asyncio.sleep(0.05)
    assert sample(text, "llmops_grpc_requests_total", method=method, code="INVALID_ARGUMENT") >= 1
