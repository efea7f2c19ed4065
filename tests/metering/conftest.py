"""Metering tests: a real nats-server and the metering service as its own process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from tests.support import ROOT, ServiceProcess


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
