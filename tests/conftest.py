"""Shared fixtures: real components on free ports of 127.0.0.1, stopped afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from llmops.bus.topology import ensure_topology
from llmops.docclient import DocumentClient
from llmops.grpcutil import channel
from llmops.v1 import retrieval_pb2_grpc
from tests.support import Platform, nats_server, run_platform

MAX_DOCUMENT_BYTES = 1_000_000  # small, so the oversized-document test stays cheap


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One whole platform (`llmops up`: NATS, Triton, every service) shared by the e2e tests.

    Tests isolate themselves by tenant, so sharing is safe and start-up is paid once.
    """
    limits = {
        "LLMOPS_MAX_DOCUMENT_BYTES": str(MAX_DOCUMENT_BYTES),
        "LLMOPS_GATEWAY_REPLICAS": "2",  # tests/e2e/test_metering.py runs a second gateway
    }
    with run_platform(tmp_path_factory.mktemp("platform") / "data", extra_env=limits) as p:
        yield p


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real nats-server of the test module's own (tests of one service as a process)."""
    with nats_server(tmp_path_factory.mktemp("nats") / "store") as url:
        yield url


@pytest.fixture(scope="module")
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """JetStream on the module's nats-server, with the platform's streams and buckets."""
    nc = await nats.connect(nats_url)
    await ensure_topology(nc.jetstream())
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def docs(platform: Platform) -> AsyncIterator[DocumentClient]:
    client = await DocumentClient.connect(platform.nats_url)
    await client.watch()
    yield client
    await client.close()


@pytest.fixture
async def retrieval(platform: Platform) -> AsyncIterator[retrieval_pb2_grpc.RetrievalStub]:
    ch: grpc.aio.Channel = channel(platform.addr("retrieval"))
    yield retrieval_pb2_grpc.RetrievalStub(ch)
    await ch.close()


@pytest.fixture
def sample_dir() -> Path:
    return Path(__file__).parent / "data" / "docs"
