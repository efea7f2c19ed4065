"""A gated stage (a writer's, behind its lease) starts even if JetStream refuses it at first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import nats

from llmops.bus.stage import Delivery
from llmops.bus.topology import Consumer, Stream
from llmops.service import ServiceApp
from llmops.settings import CommonSettings
from tests.support import nats_server

LATE = Stream("TEST_LATE", ("test.late",), 0, "created after the stage first tries to start")


async def test_a_gated_stage_retries_its_start_until_its_stream_exists(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as url:
        app = ServiceApp(
            "test",
            CommonSettings(nats_url=url, data_dir=tmp_path / "data"),
            grpc_addr=None,
            metrics_port=0,
        )
        seen: list[bytes] = []

        async def handle(batch: Sequence[Delivery]) -> None:
            seen.extend(d.data for d in batch)

        async def gate() -> None:  # the lease is granted at once
            return None

        app.add_stage(Consumer(LATE, "late", "test.late"), handle, batch_size=8, starts_after=gate)
        await app.start()
        try:
            await asyncio.sleep(1.0)  # its first starts fail: the stream does not exist yet
            nc = await nats.connect(url)
            js = nc.jetstream()
            await js.add_stream(LATE.config(1))
            await js.publish("test.late", b"one")
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.1)
            await nc.close()
            assert seen == [b"one"]
        finally:
            await app.stop()
