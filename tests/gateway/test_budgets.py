"""The gateway's budget guard over real NATS KV: refuse when spent, renew next period, one at a
time near the limit."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from gateway.budgets import BudgetGuard
from gateway.errors import GatewayError
from llmops.apikeys import KeyRecord
from llmops.bus.topology import BUDGETS_BUCKET, SPEND_BUCKET, ensure_topology
from llmops.spend import Budget, Spend, period_start, spend_key
from llmops.v1 import metering_pb2
from tests.support import nats_server

TODAY = dt.datetime(2026, 11, 25, 15, 0, tzinfo=dt.UTC)
KEY = KeyRecord(key_id="0123456789ab", tenant="acme", secret_sha256="x", created_at=0)


@pytest.fixture
async def js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    with nats_server(tmp_path / "js") as url:
        nc = await nats.connect(url)
        await ensure_topology(nc.jetstream())
        yield nc.jetstream()
        await nc.close()


async def _guard(js: JetStreamContext, clock: list[dt.datetime]) -> BudgetGuard:
    guard = BudgetGuard(clock=lambda: clock[0])
    await guard.start(js)
    return guard


async def _spent(js: JetStreamContext, nanos: int, when: dt.datetime = TODAY) -> None:
    kv = await js.key_value(SPEND_BUCKET)
    key = spend_key("acme", "", "day", period_start("day", when))
    await kv.put(key, Spend(tenant="acme", spend={"USD": nanos}).model_dump_json().encode())


async def test_a_spent_daily_budget_refuses_until_the_next_day(js: JetStreamContext) -> None:
    budgets = await js.key_value(BUDGETS_BUCKET)
    budget = Budget(tenant="acme", daily_limit_nanos=1_000_000)
    await budgets.put(budget.key, budget.model_dump_json().encode())
    await _spent(js, 1_000_000)
    clock = [TODAY]
    guard = await _guard(js, clock)
    with pytest.raises(GatewayError) as refused:
        async with guard.admit(KEY):
            pass
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "daily budget of tenant acme ($0.001) is spent" in refused.value.message
    assert refused.value.retry_after_s == 9 * 3600  # until midnight UTC
    clock[0] = TODAY + dt.timedelta(days=1)  # a new day: a new counter, nothing spent
    async with guard.admit(KEY):
        pass
    await guard.stop()


async def test_near_the_limit_one_request_at_a_time_and_then_refused(
    js: JetStreamContext,
) -> None:
    budgets = await js.key_value(BUDGETS_BUCKET)
    budget = Budget(tenant="acme", daily_limit_nanos=1_000_000)
    await budgets.put(budget.key, budget.model_dump_json().encode())
    guard = await _guard(js, [TODAY])
    spend = await js.key_value(SPEND_BUCKET)
    counted = Spend(tenant="acme")
    cost = metering_pb2.Cost(nanos=400_000, currency="USD", priced=True)

    async def metering_counts(request_id: str) -> None:
        """What the metering service does a moment after a request: count it."""
        await asyncio.sleep(0.05)
        counted.spend["USD"] = counted.spend.get("USD", 0) + cost.nanos
        counted.recent.append(request_id)
        key = spend_key("acme", "", "day", period_start("day", TODAY))
        await spend.put(key, counted.model_dump_json().encode())

    tasks = []
    async with guard.admit(KEY) as record:  # the first teaches the guard what a request costs
        record(cost, "first")
    await metering_counts("first")
    day = spend_key("acme", "", "day", period_start("day", TODAY))
    for _ in range(500):  # until the guard's watch has seen the count
        if "first" in getattr(guard.spend.get(day), "recent", []):
            break
        await asyncio.sleep(0.01)
    order: list[str] = []

    async def request(name: str) -> None:
        try:
            async with guard.admit(KEY) as record:
                order.append(f"{name} runs")
                await asyncio.sleep(0.1)
                record(cost, name)
                tasks.append(asyncio.create_task(metering_counts(name)))
                order.append(f"{name} done")
        except GatewayError:
            order.append(f"{name} refused")

    # 0.4 of 1 spent. `a` runs freely: even at the dearest cost it stays under the limit.
    # With `a` in flight `b` could pass it: `b` takes the budget's turn. `c` waits for the
    # turn, then for metering to count `a` and `b`, and sees 1.2 spent: refused. The
    # overshoot is `b`: one request of this replica.
    await asyncio.gather(request("a"), request("b"), request("c"))
    assert order == ["a runs", "b runs", "a done", "b done", "c refused"]
    await asyncio.gather(*tasks)
    await guard.stop()


async def test_no_budget_admits_without_waiting(js: JetStreamContext) -> None:
    guard = await _guard(js, [TODAY])
    async with guard.admit(KEY) as record:
        record(metering_pb2.Cost(nanos=10**12, currency="USD", priced=True), "r1")
    await guard.stop()


async def test_a_key_budget_refuses_that_key_only(js: JetStreamContext) -> None:
    budgets = await js.key_value(BUDGETS_BUCKET)
    budget = Budget(tenant="acme", key_id=KEY.key_id, monthly_limit_nanos=5_000_000)
    await budgets.put(budget.key, budget.model_dump_json().encode())
    spend = await js.key_value(SPEND_BUCKET)
    counter = spend_key("acme", KEY.key_id, "month", period_start("month", TODAY))
    await spend.put(
        counter, Spend(tenant="acme", spend={"USD": 5_000_000}).model_dump_json().encode()
    )
    guard = await _guard(js, [TODAY])
    with pytest.raises(GatewayError) as refused:
        async with guard.admit(KEY):
            pass
    assert f"monthly budget of key {KEY.key_id} ($0.005) is spent" in refused.value.message
    other = KeyRecord(key_id="ba9876543210", tenant="acme", secret_sha256="x", created_at=0)
    async with guard.admit(other):  # the tenant's other keys are not limited by it
        pass
    await guard.stop()
