"""The one-writer lease (llmops.lease) on a real nats-server: a holder, standbys, fencing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from llmops.bus.topology import LEASE_TTL_S, ensure_topology
from llmops.lease import WriterLease
from tests.support import nats_server


class Clock:
    """A monotonic clock a test can jump forward (a process paused for that long)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


async def test_one_holder_a_standby_takes_over_and_a_paused_holder_stops_writing(
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path / "nats") as url:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_topology(js)
        lost: list[str] = []
        clock = Clock()
        first = WriterLease("writer", on_lost=lambda: lost.append("first"), holder="a", clock=clock)
        second = WriterLease("writer", on_lost=lambda: lost.append("second"), holder="b")
        nc_second = await nats.connect(url)
        await first.acquire(js)
        assert first.held()
        waiting = asyncio.create_task(second.acquire(nc_second.jetstream()))
        await asyncio.sleep(LEASE_TTL_S / 4 + 0.5)  # past a renewal of the first
        assert not waiting.done() and not second.held()  # a standby while the first renews

        # A clean stop hands over at once.
        await first.release()
        await asyncio.wait_for(waiting, LEASE_TTL_S / 2)
        assert second.held() and not first.held()

        # The second is cut off from NATS (its renewals fail): a third takes over once the
        # lease ages out, and by then the second has stopped trusting it.
        await nc_second.close()
        third = WriterLease("writer", on_lost=lambda: lost.append("third"), holder="c")
        started = time.monotonic()
        await asyncio.wait_for(third.acquire(js), LEASE_TTL_S * 2)
        took = time.monotonic() - started
        assert LEASE_TTL_S * 0.5 < took < LEASE_TTL_S * 1.6, took
        assert third.held() and not second.held()  # it stopped trusting it before
        for _ in range(40):  # and says so at its next renewal
            if lost:
                break
            await asyncio.sleep(0.1)
        assert lost == ["second"]

        # A holder paused past its lease finds it lapsed on waking and gives up.
        clock_holder = WriterLease("other", on_lost=lambda: lost.append("paused"), clock=clock)
        await clock_holder.acquire(js)
        clock.skipped = LEASE_TTL_S  # the process was stopped for a whole TTL
        assert not clock_holder.held()
        await asyncio.sleep(LEASE_TTL_S / 4 + 0.5)  # its next renewal
        assert lost == ["second", "paused"]
        await third.release()
        await clock_holder.release()
        await nc.close()
