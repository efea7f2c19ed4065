"""Fixtures for analytics tests: a real nats-server, embedded chDB, the service as a process.

chDB runs one engine per process, at one path: every in-process test shares
`chdb_dir` and isolates itself with its own database.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client
from nats.js import JetStreamContext

from analytics.app import open_database
from analytics.settings import AnalyticsSettings
from llmops.apikeys import KeyAdmin
from tests.analytics.service import FAST, AnalyticsProcess
from tests.support import ROOT


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def settings(chdb_dir: Path) -> AnalyticsSettings:
    return AnalyticsSettings(
        data_dir=chdb_dir,
        clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
        migrations_dir=ROOT / "deploy" / "clickhouse" / "migrations",
    )


@pytest.fixture
def ch(settings: AnalyticsSettings) -> Iterator[Client]:
    """A migrated database of its own in the shared embedded chDB."""
    client = open_database(settings)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    client.close()


@pytest.fixture(scope="module")
async def analyst_key(js: JetStreamContext) -> str:
    return (await KeyAdmin(js).create_key("ops", all_tenants_analytics=True)).key


@pytest.fixture(scope="module")
async def analytics(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AnalyticsProcess]:
    service = AnalyticsProcess(
        nats_url, tmp_path_factory.mktemp("analytics"), LLMOPS_ANALYTICS_BATCH_SIZE="1000", **FAST
    )
    service.start()
    await service.wait_healthy()
    yield service
    service.stop()
    await service.close()
