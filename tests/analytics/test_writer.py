"""The writer against real JetStream deliveries and embedded chDB: batches, redelivery, poison."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from clickhouse_connect.driver.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from analytics.writer import EventWriter
from llmops.bus.stage import Delivery, PoisonMessage, Unavailable
from llmops.bus.topology import EVENTS_STREAM, INTERACTION_EVENTS
from llmops.service import Loaded
from tests.analytics.events import interaction, publish, usage_event


class _Health:
    def __init__(self) -> None:
        self.reports: list[bool] = []

    async def __call__(self, ok: bool) -> None:
        self.reports.append(ok)


async def _deliveries(
    js: JetStreamContext, durable: str, n: int, ack_wait_s: float = 1.0
) -> list[Delivery]:
    sub = await js.pull_subscribe_bind(durable, EVENTS_STREAM.name)
    msgs = []
    while len(msgs) < n:
        msgs += await sub.fetch(n - len(msgs), timeout=5)
    return [Delivery(m) for m in msgs]


async def _consumer(js: JetStreamContext, tenant_subject: str) -> str:
    durable = f"test-{uuid.uuid4().hex[:8]}"
    await js.add_consumer(
        EVENTS_STREAM.name,
        ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=1.0,
            filter_subject=tenant_subject,
        ),
    )
    return durable


def _writer(
    ch: Client, health: _Health, hold_s: float = 5.0, lease: list[bool] | None = None
) -> EventWriter:
    """`lease`: whether this replica holds the writer lease, read at every insert."""
    box: Loaded[Client] = Loaded("client")
    box.set(ch)
    held = lease if lease is not None else [True]
    return EventWriter(box, hold_s, health, lambda: held[0])


async def test_a_redelivered_event_is_stored_once(ch: Client, js: JetStreamContext) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = await _consumer(js, INTERACTION_EVENTS)
    health = _Health()
    writer = _writer(ch, health)
    first = [interaction(tenant) for _ in range(40)]
    await publish(js, first)
    batch = await _deliveries(js, durable, 40)
    await writer.handle(batch)  # inserted, but never acked (as if the ack was lost)
    assert all(d.error is None for d in batch)
    later = [interaction(tenant) for _ in range(10)]
    await publish(js, later)
    await asyncio.sleep(1.2)  # ack_wait passes: JetStream redelivers the 40 with the 10 new
    again = await _deliveries(js, durable, 50)
    assert sorted(d.deliveries for d in again).count(2) == 40
    await writer.handle(again)
    counts = ch.query(
        "SELECT count(), uniqExact(event_id) FROM interactions WHERE tenant = {t:String}",
        parameters={"t": tenant},
    ).result_rows[0]
    assert tuple(counts) == (50, 50)
    rollup = ch.query(
        "SELECT sum(requests) FROM latency_hourly WHERE tenant = {t:String}",
        parameters={"t": tenant},
    ).result_rows[0][0]
    assert rollup == 50  # the materialized view did not count the redelivered 40 twice
    assert health.reports == [True, True]


async def test_poison_is_failed_alone_and_the_rest_stored(ch: Client, js: JetStreamContext) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = await _consumer(js, "llmops.events.>")
    good = [interaction(tenant) for _ in range(5)]
    await publish(js, good[:2])
    await js.publish(INTERACTION_EVENTS, b"\xff\xff not protobuf")
    await js.publish(INTERACTION_EVENTS, interaction("").SerializeToString())  # no tenant
    await js.publish("llmops.events.mystery", interaction(tenant).SerializeToString())
    await publish(js, good[2:])
    batch = await _deliveries(js, durable, 8)
    await _writer(ch, _Health()).handle(batch)
    reasons = [str(d.error) for d in batch if d.error is not None]
    assert all(isinstance(d.error, PoisonMessage) for d in batch if d.error is not None)
    assert len(reasons) == 3
    assert any("not a InteractionEvent" in r for r in reasons)
    assert any("without event_id, tenant or time" in r for r in reasons)
    assert any("no analytics table for subject 'llmops.events.mystery'" in r for r in reasons)
    stored = ch.query(
        "SELECT count() FROM interactions WHERE tenant = {t:String}", parameters={"t": tenant}
    ).result_rows[0][0]
    assert stored == 5


async def test_a_replica_that_lost_the_writer_lease_inserts_nothing(
    ch: Client, js: JetStreamContext
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = await _consumer(js, INTERACTION_EVENTS)
    lease = [False]  # paused past its lease: a standby may be writing now
    writer = _writer(ch, _Health(), lease=lease)
    await publish(js, [interaction(tenant) for _ in range(3)])
    batch = await _deliveries(js, durable, 3)
    with pytest.raises(Unavailable, match="writer lease"):
        await writer.handle(batch)  # back to JetStream, never dead-lettered
    count = "SELECT count() FROM interactions WHERE tenant = {t:String}"
    assert ch.query(count, parameters={"t": tenant}).result_rows[0][0] == 0
    lease[0] = True
    await writer.handle(batch)
    assert ch.query(count, parameters={"t": tenant}).result_rows[0][0] == 3


async def test_clickhouse_gone_makes_the_batch_wait_not_fail(
    ch: Client, js: JetStreamContext
) -> None:
    """A store error holds the batch for `outage_hold_s`, then hands it back as Unavailable."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = await _consumer(js, INTERACTION_EVENTS)
    await publish(js, [interaction(tenant) for _ in range(3)])
    batch = await _deliveries(js, durable, 3)
    health = _Health()
    ch.command("RENAME TABLE interactions TO interactions_away")  # inserts fail server-side
    try:
        with pytest.raises(Unavailable, match="ClickHouse unavailable"):
            await _writer(ch, health, hold_s=0.5).handle(batch)
    finally:
        ch.command("RENAME TABLE interactions_away TO interactions")
    assert health.reports and health.reports[-1] is False
    await _writer(ch, health).handle(batch)  # back: stored, healthy again
    assert health.reports[-1] is True
    stored = ch.query(
        "SELECT count() FROM interactions WHERE tenant = {t:String}", parameters={"t": tenant}
    ).result_rows[0][0]
    assert stored == 3


async def test_a_rollup_that_missed_a_stored_batch_is_made_exact(
    ch: Client, js: JetStreamContext
) -> None:
    """A crash between the table's part and the views' leaves events stored but not rolled up:
    their redelivery recomputes the rollups' rows for them, neither short nor counted twice."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    durable = await _consumer(js, "llmops.events.>")
    writer = _writer(ch, _Health())
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    first = [
        *(interaction(tenant, total_ms=float(i)) for i in range(30)),
        *(interaction(tenant, when=hour_ago, total_ms=500.0) for _ in range(5)),
        *(usage_event(tenant, 1_000) for _ in range(20)),
    ]
    await publish(js, first)
    await writer.handle(await _deliveries(js, durable, len(first)))  # stored, never acked
    where = {"t": tenant}
    for rollup in ("latency_hourly", "usage_daily"):  # as if the views' parts were never written
        ch.command(f"DELETE FROM {rollup} WHERE tenant = {{t:String}}", parameters=where)
    other = f"t{uuid.uuid4().hex[:8]}"  # another tenant's rollup is left alone
    later = [interaction(tenant, total_ms=1000.0), interaction(other), usage_event(tenant, 7)]
    await publish(js, later)
    await asyncio.sleep(1.2)  # ack_wait passes: the 55 come again, with 3 new
    again = await _deliveries(js, durable, len(first) + len(later))
    await writer.handle(again)

    def one(sql: str) -> tuple[object, ...]:
        return tuple(ch.query(sql, parameters=where).result_rows[0])

    latency = (
        "SELECT sum(requests), quantilesMerge(0.5, 0.9, 0.95, 0.99)(total_ms) "
        "FROM latency_hourly WHERE tenant = {t:String}"
    )
    raw = (
        "SELECT count(), quantiles(0.5, 0.9, 0.95, 0.99)(total_ms) FROM interactions "
        "WHERE tenant = {t:String}"
    )
    assert one(latency) == one(raw) and one(latency)[0] == 36
    assert one("SELECT uniqExact(hour) FROM latency_hourly WHERE tenant = {t:String}") == (2,)
    usage = "SELECT sum(requests), toString(sum(cost)) FROM usage_daily WHERE tenant = {t:String}"
    assert one(usage) == (21, "0.000020007")
    where["t"] = other
    assert one("SELECT sum(requests) FROM latency_hourly WHERE tenant = {t:String}") == (1,)
