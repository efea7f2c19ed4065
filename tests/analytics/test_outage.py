"""ClickHouse as a server (over its HTTP interface) going away and coming back.

A real ClickHouse server cannot be installed here, so `tests/clickhouse_http.py`
serves ClickHouse's HTTP protocol from chDB (the ClickHouse engine) in its own
process: the service runs its production code path (LLMOPS_CLICKHOUSE_URL),
and the test can stop and start "the server".
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from llmops.bus.topology import DLQ_STREAM
from tests.analytics.events import interaction, publish
from tests.analytics.service import FAST, AnalyticsProcess
from tests.clickhouse_http import ClickHouseHttp


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseHttp]:
    with ClickHouseHttp(tmp_path / "clickhouse-server") as server:
        yield server


async def _dead_letters(js: JetStreamContext) -> int:
    info = await js.stream_info(DLQ_STREAM.name, subjects_filter="llmops.dlq.analytics")
    return sum((info.state.subjects or {}).values())


async def test_an_outage_holds_events_in_jetstream_and_loses_none(
    clickhouse: ClickHouseHttp,
    nats_url: str,
    js: JetStreamContext,
    analyst_key: str,
    tmp_path: Path,
) -> None:
    service = AnalyticsProcess(
        nats_url,
        tmp_path / "analytics",
        LLMOPS_CLICKHOUSE_URL=clickhouse.url,
        LLMOPS_ANALYTICS_OUTAGE_HOLD_S="1",
        **FAST,
    )
    service.start()
    try:
        await service.wait_healthy()
        tenant = f"t{uuid.uuid4().hex[:10]}"
        count = f"SELECT count() FROM interactions WHERE tenant = '{tenant}'"
        await publish(js, [interaction(tenant) for _ in range(100)])
        await service.wait_for(analyst_key, count, 100)
        dead_before = await _dead_letters(js)

        clickhouse.stop()
        await publish(js, [interaction(tenant) for _ in range(200)])
        await service.wait_healthy(False, timeout_s=20)  # readiness follows ClickHouse
        await asyncio.sleep(3)  # several delivery attempts while it is down
        clickhouse.start()
        await service.wait_healthy(True, timeout_s=30)
        await service.wait_for(analyst_key, count, 300, timeout_s=60)
        assert (
            await service.scalar(
                analyst_key,
                f"SELECT uniqExact(event_id) FROM interactions WHERE tenant = '{tenant}'",
            )
            == 300
        )
        assert await _dead_letters(js) == dead_before  # waiting is not failing

        # Down when the service starts: it waits, unready, then catches up.
        service.stop()
        clickhouse.stop()
        await publish(js, [interaction(tenant) for _ in range(50)])
        service.start()
        await asyncio.sleep(2)
        await service.wait_healthy(False, timeout_s=5)
        clickhouse.start()
        await service.wait_healthy(True, timeout_s=60)
        await service.wait_for(analyst_key, count, 350, timeout_s=60)
    finally:
        service.stop()
        await service.close()
