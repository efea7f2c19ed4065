"""The event publisher on a real nats-server: batches, exactly once, through an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import EVENTS_STREAM, INTERACTION_EVENTS, ensure_topology
from llmops.v1 import events_pb2
from tests.support import free_port, nats_server


async def stored_ids(js: JetStreamContext, prefix: str, expected: int) -> list[str]:
    """The event ids starting with `prefix` in the EVENTS stream, duplicates kept."""
    sub = await js.pull_subscribe(
        INTERACTION_EVENTS,
        stream=EVENTS_STREAM.name,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    found: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    try:
        while loop.time() < deadline:
            try:
                messages = await sub.fetch(1000, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                if len(found) >= expected:
                    break
                continue
            for msg in messages:
                event = events_pb2.InteractionEvent.FromString(msg.data)
                if event.event_id.startswith(prefix):
                    found.append(event.event_id)
    finally:
        await sub.unsubscribe()
    return found


async def _publisher_reconnecting(url: str) -> tuple[nats.NATS, JetStreamContext, EventPublisher]:
    """A started publisher on a connection that keeps reconnecting (for an outage)."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await ensure_topology(js)
    publisher = EventPublisher(js, "test")
    publisher.start()
    return nc, js, publisher


def event(event_id: str) -> events_pb2.InteractionEvent:
    return events_pb2.InteractionEvent(event_id=event_id, tenant="acme", status="OK")


async def test_a_burst_is_published_in_batches_exactly_once(js: JetStreamContext) -> None:
    publisher = EventPublisher(js, "test")
    publisher.start()
    for i in range(3000):  # more than one batch, emitted faster than acks come back
        publisher.emit(INTERACTION_EVENTS, event(f"burst-{i}"))
    await publisher.stop(timeout_s=20)
    ids = await stored_ids(js, "burst-", 3000)
    assert sorted(ids) == sorted(f"burst-{i}" for i in range(3000))


async def test_events_emitted_while_nats_is_down_land_once_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store"
    with nats_server(store, port=port) as url:
        nc, js, publisher = await _publisher_reconnecting(url)
        for i in range(100):
            publisher.emit(INTERACTION_EVENTS, event(f"outage-{i}"))
        await asyncio.sleep(1)
    # NATS is down: these wait in the queue (and in retried batches) for it.
    for i in range(100, 400):
        publisher.emit(INTERACTION_EVENTS, event(f"outage-{i}"))
    await asyncio.sleep(2)
    with nats_server(store, port=port):
        await publisher.stop(timeout_s=30)
        ids = await stored_ids(js, "outage-", 400)
        await nc.close()
    assert sorted(ids) == sorted(f"outage-{i}" for i in range(400))  # none lost, none twice


async def test_an_acked_emit_resolves_once_stored_and_waits_out_an_outage(
    tmp_path: Path,
) -> None:
    port = free_port()
    store = tmp_path / "store"
    with nats_server(store, port=port) as url:
        nc, js, publisher = await _publisher_reconnecting(url)
        await asyncio.wait_for(publisher.emit_acked(INTERACTION_EVENTS, event("acked-0")), 5)
        assert await stored_ids(js, "acked-", 1) == ["acked-0"]  # stored when it resolved
    waiting = publisher.emit_acked(INTERACTION_EVENTS, event("acked-1"))
    await asyncio.sleep(1.5)
    assert not waiting.done()  # NATS is down: not stored, so not resolved
    with nats_server(store, port=port):
        await asyncio.wait_for(waiting, 20)
        assert sorted(await stored_ids(js, "acked-", 2)) == ["acked-0", "acked-1"]
        await publisher.stop()
        await nc.close()
