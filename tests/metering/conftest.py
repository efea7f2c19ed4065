"""Metering tests: a real nats-server and the metering service as its own process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import ensure_topology
from tests.support import ROOT, ServiceProcess, nats_server


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats") / "store") as url:
        yield url


@pytest.fixture(scope="module")
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    await ensure_topology(nc.jetstream())
    yield nc.jetstream()
    await nc.close()


@pytest.fixture(scope="module")
async def admin_key(js: JetStreamContext) -> str:
    return (await KeyAdmin(js).create_key("ops", all_tenants_analytics=True)).key


@pytest.fixture(scope="module")
async def metering(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess(
        "metering",
        nats_url,
        tmp_path_factory.mktemp("metering"),
        LLMOPS_PRICES_FILE=str(ROOT / "deploy" / "metering" / "prices.yaml"),
        LLMOPS_ACK_WAIT_S="3",  # a crashed batch comes back in 3 s, not 60
    )
    service.start()
    await service.wait_healthy()
    yield service
    service.stop()
    await service.close()
