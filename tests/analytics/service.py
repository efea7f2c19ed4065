"""Services as real processes on free ports (tests, bench): any one, and analytics with SQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc

from llmops.v1 import analytics_pb2, analytics_pb2_grpc
from tests.support import ROOT, ServiceProcess

# Tests want quick turns: small flushes, and a crashed batch back in 3 s rather than 60.
FAST = {"LLMOPS_ANALYTICS_FLUSH_INTERVAL_S": "0.2", "LLMOPS_ACK_WAIT_S": "3"}


class AnalyticsProcess(ServiceProcess):
    """The analytics service, with its SQL API at hand."""

    def __init__(self, nats_url: str, data_dir: Path, **env: str) -> None:
        migrations = str(ROOT / "deploy" / "clickhouse" / "migrations")
        super().__init__("analytics", nats_url, data_dir, LLMOPS_MIGRATIONS_DIR=migrations, **env)

    async def query(self, key: str, sql: str, **fields: Any) -> analytics_pb2.QueryReply:
        return await analytics_pb2_grpc.AnalyticsStub(self.channel).Query(
            analytics_pb2.QueryRequest(sql=sql, **fields),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=60,
        )

    async def scalar(self, key: str, sql: str, **fields: Any) -> Any:
        reply = await self.query(key, sql, **fields)
        return reply.rows[0][0]

    async def wait_for(self, key: str, sql: str, expected: Any, timeout_s: float = 30) -> None:
        """Poll `sql` (one value) until it equals `expected`."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            try:
                value = await self.scalar(key, sql)
            except grpc.aio.AioRpcError as exc:
                value = exc.code()
            if value == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{sql} = {value!r}, expected {expected!r}\n{self.log()[-3000:]}")
