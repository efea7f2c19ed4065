"""The ingestion service as a process on the module's nats-server, with its default settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.js import JetStreamContext

from tests.support import ServiceProcess


@pytest.fixture(scope="module")
async def ingestion(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess("ingestion", nats_url, tmp_path_factory.mktemp("ingestion"))
    service.start()
    await service.wait_healthy()
    yield service
    service.stop()
    await service.close()
