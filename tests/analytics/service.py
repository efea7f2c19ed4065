"""A real analytics service process (`python -m analytics`) on free ports (tests, bench)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from llmops.grpcutil import channel, check_health
from llmops.v1 import analytics_pb2, analytics_pb2_grpc
from tests.support import ROOT, free_port

# Tests want quick turns: small flushes, and a crashed batch back in 3 s rather than 60.
FAST = {"LLMOPS_ANALYTICS_FLUSH_INTERVAL_S": "0.2", "LLMOPS_ACK_WAIT_S": "3"}


class AnalyticsProcess:
    def __init__(self, nats_url: str, data_dir: Path, **env: str) -> None:
        self.addr = f"127.0.0.1:{free_port()}"
        self.data_dir = data_dir
        self.log_path = data_dir / "analytics.log"
        self.env = {
            **os.environ,
            "LLMOPS_NATS_URL": nats_url,
            "LLMOPS_DATA_DIR": str(data_dir),
            "LLMOPS_ANALYTICS_ADDR": self.addr,
            "LLMOPS_ANALYTICS_METRICS_PORT": str(free_port()),
            "LLMOPS_MIGRATIONS_DIR": str(ROOT / "deploy" / "clickhouse" / "migrations"),
            "LLMOPS_LOG_FORMAT": "console",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.aio.Channel | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "analytics"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_healthy(self, healthy: bool = True, timeout_s: float = 60) -> float:
        """Until readiness is `healthy`; the seconds it took."""
        started = time.monotonic()
        while await check_health(self.addr) != healthy:
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            if time.monotonic() > started + timeout_s:
                raise TimeoutError(f"analytics healthy != {healthy}\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def query(self, key: str, sql: str, **fields: Any) -> analytics_pb2.QueryReply:
        if self._channel is None:  # one channel, kept: query latency is measured through it
            self._channel = channel(self.addr)
        return await analytics_pb2_grpc.AnalyticsStub(self._channel).Query(
            analytics_pb2.QueryRequest(sql=sql, **fields),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=60,
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

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
