"""Metering as a process: interactions priced into usage events, spend counters, budgets."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import uuid
from decimal import Decimal
from typing import Any

import grpc
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import (
    BUDGET_EVENTS,
    DLQ_STREAM,
    EVENTS_STREAM,
    SPEND_BUCKET,
    USAGE_EVENTS,
    dlq_subject,
)
from llmops.pricebook import add_prices
from llmops.pricing import Price
from llmops.spend import Spend, period_start, spend_key
from llmops.v1 import events_pb2, metering_pb2, metering_pb2_grpc
from tests.analytics.events import interaction, publish
from tests.support import ServiceProcess

NOW = dt.datetime.now(dt.UTC)


def _tenant() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


async def _usage_events(js: JetStreamContext, tenant: str, n: int) -> list[events_pb2.UsageEvent]:
    """The tenant's usage events in the stream, once there are `n` (or fail after 15 s)."""
    found: dict[str, events_pb2.UsageEvent] = {}
    for _ in range(150):
        sub = await js.pull_subscribe(
            USAGE_EVENTS,
            stream=EVENTS_STREAM.name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        try:
            while True:
                msgs = await sub.fetch(1000, timeout=0.5)
                for m in msgs:
                    e = events_pb2.UsageEvent.FromString(m.data)
                    if e.tenant == tenant:
                        found.setdefault(e.event_id, e)
        except (TimeoutError, Exception):
            pass
        finally:
            await sub.unsubscribe()
        if len(found) >= n:
            return sorted(found.values(), key=lambda e: e.time.ToNanoseconds())
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(found)} usage events of {tenant}, expected {n}")


async def _counter(
    js: JetStreamContext, tenant: str, key_id: str = "", period: Any = "day"
) -> Spend:
    """The counter of the period now (the events are stamped when made, not at import)."""
    kv = await js.key_value(SPEND_BUCKET)
    start = period_start(period, dt.datetime.now(dt.UTC))
    entry = await kv.get(spend_key(tenant, key_id, period, start))
    return Spend.model_validate_json(entry.value or b"{}")


async def _wait_counter(
    js: JetStreamContext, tenant: str, requests: int, key_id: str = ""
) -> Spend:
    spend = None
    for _ in range(150):
        try:
            spend = await _counter(js, tenant, key_id)
            if spend.requests >= requests:
                return spend
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"counter of {tenant}: {spend}")


async def test_a_request_is_priced_to_the_nano_with_cached_and_reasoning_tokens(
    metering: ServiceProcess, js: JetStreamContext
) -> None:
    await add_prices(
        js,
        [
            Price(
                model="test/priced",
                effective_from=NOW - dt.timedelta(days=3),
                input_per_mtok=Decimal("2.5"),
                output_per_mtok=Decimal("10"),
                cached_input_per_mtok=Decimal("1.25"),
                reasoning_per_mtok=Decimal("12"),
                source="test",
            )
        ],
    )
    await asyncio.sleep(0.3)  # the service's price watch
    tenant = _tenant()
    event = interaction(tenant, model_used="test/priced", usage=(1200, 300))
    event.usage.cached_input_tokens, event.usage.reasoning_tokens = 1024, 100
    await publish(js, [event])
    [usage] = await _usage_events(js, tenant, 1)
    # (1200-1024) x 2.5 + 1024 x 1.25 + (300-100) x 10 + 100 x 12 = 4,920 dollars per million
    # tokens: $0.00492 = 4,920,000 nanos
    assert usage.cost_nanos == 4_920_000 and usage.priced and usage.currency == "USD"
    assert usage.price_version.startswith("test/priced@")
    assert (usage.cached_input_tokens, usage.reasoning_tokens) == (1024, 100)
    spend = await _wait_counter(js, tenant, 1)
    assert spend.spend == {"USD": 4_920_000} and spend.unpriced == 0
    key_spend = await _wait_counter(js, tenant, 1, key_id=event.key_id)
    assert key_spend.spend == {"USD": 4_920_000}


async def test_a_price_change_applies_from_its_time_and_keeps_the_past(
    metering: ServiceProcess, js: JetStreamContext
) -> None:
    start = NOW - dt.timedelta(minutes=30)
    await add_prices(
        js,
        [
            Price(model="test/changing", effective_from=start, input_per_mtok=Decimal("1")),
            Price(
                model="test/changing",
                effective_from=start + dt.timedelta(minutes=20),
                input_per_mtok=Decimal("3"),
            ),
        ],
    )
    await asyncio.sleep(0.3)
    tenant = _tenant()
    before = interaction(tenant, model_used="test/changing", usage=(1_000_000, 0))
    before.time.FromDatetime(start + dt.timedelta(minutes=10))
    after = interaction(tenant, model_used="test/changing", usage=(1_000_000, 0))
    after.time.FromDatetime(start + dt.timedelta(minutes=25))
    await publish(js, [before, after])
    old, new = await _usage_events(js, tenant, 2)
    assert (old.cost_nanos, new.cost_nanos) == (1_000_000_000, 3_000_000_000)
    assert old.price_version != new.price_version


async def test_an_unpriced_model_is_reported_never_free(
    metering: ServiceProcess, js: JetStreamContext, admin_key: str
) -> None:
    tenant = _tenant()
    await publish(js, [interaction(tenant, model_used="mystery/model-x")])
    [usage] = await _usage_events(js, tenant, 1)
    assert not usage.priced and usage.cost_nanos == 0
    spend = await _wait_counter(js, tenant, 1)
    assert spend.unpriced == 1 and spend.unpriced_models == ["mystery/model-x"]
    reply = await metering_pb2_grpc.MeteringStub(metering.channel).GetUsage(
        metering_pb2.UsageRequest(tenant=tenant),
        metadata=(("authorization", f"Bearer {admin_key}"),),
    )
    assert "mystery/model-x" in reply.unpriced_models
    assert reply.lines[0].unpriced_requests == 1


async def test_a_soft_alert_fires_once_per_threshold(
    metering: ServiceProcess, js: JetStreamContext, admin_key: str
) -> None:
    tenant = _tenant()
    stub = metering_pb2_grpc.MeteringStub(metering.channel)
    auth = (("authorization", f"Bearer {admin_key}"),)
    await stub.SetBudget(
        metering_pb2.SetBudgetRequest(
            budget=metering_pb2.Budget(tenant=tenant, daily_limit_nanos=10_000_000, alert_at=[0.5])
        ),
        metadata=auth,
    )
    await asyncio.sleep(0.3)
    alerts: list[events_pb2.BudgetAlertEvent] = []

    async def collect(msg: Any) -> None:
        alert = events_pb2.BudgetAlertEvent.FromString(msg.data)
        if alert.tenant == tenant:
            alerts.append(alert)

    sub = await js._nc.subscribe(BUDGET_EVENTS, cb=collect)
    alerting = Price(
        model="test/alerting",
        effective_from=NOW - dt.timedelta(days=1),
        input_per_mtok=Decimal("3"),  # 1,000 input tokens: $0.003 = 3,000,000 nanos
    )
    await add_prices(js, [alerting])
    await asyncio.sleep(0.3)
    for i in range(5):  # 3, 6, 9, 12, 15 millions of nanos against a limit of 10
        await publish(js, [interaction(tenant, model_used="test/alerting", usage=(1000, 0))])
        await _wait_counter(js, tenant, i + 1)
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    assert [(a.threshold, a.period) for a in alerts if a.period == "day"] == [
        (0.5, "day"),
        (1.0, "day"),
    ]
    half = next(a for a in alerts if a.threshold == 0.5)
    assert half.spend_nanos == 6_000_000 and half.limit_nanos == 10_000_000


async def test_a_restart_mid_stream_counts_every_request_once(
    metering: ServiceProcess, js: JetStreamContext
) -> None:
    price = Price(
        model="test/restart",
        effective_from=NOW - dt.timedelta(days=1),
        input_per_mtok=Decimal("2.5"),
        output_per_mtok=Decimal("10"),
    )
    await add_prices(js, [price])
    await asyncio.sleep(0.3)
    tenant = _tenant()
    events = [interaction(tenant, model_used="test/restart", usage=(100, 10)) for _ in range(300)]

    async def publish_slowly() -> None:
        for i in range(0, len(events), 20):
            await publish(js, events[i : i + 20])
            await asyncio.sleep(0.02)

    publishing = asyncio.create_task(publish_slowly())
    await asyncio.sleep(0.2)
    metering.stop(signal.SIGKILL)
    metering.start()
    await metering.wait_healthy()
    await publishing
    spend = await _wait_counter(js, tenant, 300)
    await asyncio.sleep(4)  # past ack_wait: any redelivery has come and gone
    spend = await _counter(js, tenant)
    # (100 x 2.5 + 10 x 10) dollars per million tokens = $0.00035 = 350,000 nanos a request
    assert spend.requests == 300
    assert spend.spend == {"USD": 300 * 350_000}
    assert len(await _usage_events(js, tenant, 300)) == 300


async def test_usage_and_budgets_need_the_right_key(
    metering: ServiceProcess, js: JetStreamContext
) -> None:
    tenant = _tenant()
    key = (await KeyAdmin(js).create_key(tenant)).key
    await asyncio.sleep(0.3)
    stub = metering_pb2_grpc.MeteringStub(metering.channel)
    auth = (("authorization", f"Bearer {key}"),)
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetUsage(metering_pb2.UsageRequest(tenant="someone-else"), metadata=auth)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as setting:
        await stub.SetBudget(
            metering_pb2.SetBudgetRequest(budget=metering_pb2.Budget(tenant=tenant)),
            metadata=auth,
        )
    assert setting.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await stub.GetUsage(metering_pb2.UsageRequest())
    assert nobody.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_interaction_that_cannot_be_counted_is_dead_lettered_alone(
    metering: ServiceProcess, js: JetStreamContext
) -> None:
    tenant = _tenant()
    sub = await js.subscribe(dlq_subject("metering"), stream=DLQ_STREAM.name)
    bad = interaction("no.such*tenant", model_used="test/priced")
    await publish(js, [interaction(tenant), bad, interaction(tenant)])
    letter = events_pb2.DeadLetter.FromString((await sub.next_msg(timeout=15)).data)
    assert "no valid tenant and key id" in letter.reason
    assert events_pb2.InteractionEvent.FromString(letter.payload).event_id == bad.event_id
    spend = await _wait_counter(js, tenant, 2)
    assert spend.requests == 2
    await sub.unsubscribe()
