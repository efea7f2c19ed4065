"""Hard budgets at the gateway: refuse a tenant's or a key's request once its spend hits the limit.

Spend comes from metering's counters in NATS KV, followed by watches (no
round trip per request), plus what this replica's own finished requests cost
until metering has counted them. Near a limit (the spend plus the dearest
request seen so far, per request in flight, would reach it), a replica lets
one request of that budget run at a time, so it overshoots by at most the
one request in flight; other replicas' spend arrives when metering counts it
(well under a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
from nats.js import JetStreamContext

from gateway.errors import GatewayError
from llmops.apikeys import KeyRecord
from llmops.bus.topology import BUDGETS_BUCKET, SPEND_BUCKET
from llmops.kvmirror import KvMirror
from llmops.spend import (
    PERIODS,
    Budget,
    Period,
    Spend,
    budget_key,
    money,
    period_end,
    period_start,
    spend_key,
)
from llmops.v1 import metering_pb2

# How long a finished request's cost is added locally: metering counts it well within this
# (until then a request can be counted twice here, which errs on the side of the limit).
UNCOUNTED_S = 3.0
Record = Callable[[metering_pb2.Cost], None]


@dataclass
class _Local:
    """This replica's view of one budget between metering's updates."""

    in_flight: int = 0
    dearest: int = 0  # the largest cost of one request seen (nanos)
    uncounted: list[tuple[float, str, int]] = field(default_factory=list)  # (when, period, nanos)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BudgetGuard:
    def __init__(self, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._clock = clock
        self.budgets = KvMirror(BUDGETS_BUCKET, Budget)
        self.spend = KvMirror(SPEND_BUCKET, Spend)
        self._locals: dict[str, _Local] = {}

    async def start(self, js: JetStreamContext) -> None:
        await self.budgets.start(js)
        await self.spend.start(js)

    async def stop(self) -> None:
        await self.budgets.stop()
        await self.spend.stop()

    @contextlib.asynccontextmanager
    async def admit(self, key: KeyRecord) -> AsyncIterator[Record]:
        """Run one request under its budgets; the caller records its cost when known."""
        budgets = [
            b
            for b in (
                self.budgets.get(budget_key(key.tenant)),
                self.budgets.get(budget_key(key.tenant, key.key_id)),
            )
            if b is not None and (b.daily_limit_nanos or b.monthly_limit_nanos)
        ]
        if not budgets:
            yield _ignore
            return
        now = self._clock()
        for b in budgets:
            self._refuse_if_spent(b, now)
        async with contextlib.AsyncExitStack() as held:
            for b in sorted(budgets, key=lambda b: b.key):  # one order: no deadlock
                if self._near(b, now):
                    await held.enter_async_context(self._local(b).lock)
                    self._refuse_if_spent(b, self._clock())  # others ran meanwhile
            for b in budgets:
                self._local(b).in_flight += 1
            try:
                yield lambda cost: self._record(budgets, cost, now)
            finally:
                for b in budgets:
                    self._local(b).in_flight -= 1

    def _local(self, budget: Budget) -> _Local:
        return self._locals.setdefault(budget.key, _Local())

    def _spent(self, budget: Budget, period: Period, now: dt.datetime) -> int:
        start = period_start(period, now)
        counter = self.spend.get(spend_key(budget.tenant, budget.key_id, period, start))
        counted = counter.spend.get(budget.currency, 0) if counter else 0
        local = self._local(budget)
        cutoff = time.monotonic() - UNCOUNTED_S
        local.uncounted = [u for u in local.uncounted if u[0] > cutoff]
        return counted + sum(n for _, s, n in local.uncounted if s == start)

    def _refuse_if_spent(self, budget: Budget, now: dt.datetime) -> None:
        for period in PERIODS:
            limit = budget.limit(period)
            spent = self._spent(budget, period, now) if limit else 0
            if limit and spent >= limit:
                end = period_end(period, now)
                name = "daily" if period == "day" else "monthly"
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the {name} budget of {budget.label} ({money(limit, budget.currency)}) "
                    f"is spent ({money(spent, budget.currency)}); "
                    f"it renews at {end:%Y-%m-%d %H:%M} UTC",
                    retry_after_s=(end - now).total_seconds(),
                )

    def _near(self, budget: Budget, now: dt.datetime) -> bool:
        local = self._local(budget)
        margin = local.dearest * (local.in_flight + 1)
        return any(
            budget.limit(p) and self._spent(budget, p, now) + margin >= budget.limit(p)
            for p in PERIODS
        )

    def _record(self, budgets: list[Budget], cost: metering_pb2.Cost, now: dt.datetime) -> None:
        for b in budgets:
            if cost.priced and cost.currency == b.currency and cost.nanos:
                local = self._local(b)
                local.dearest = max(local.dearest, cost.nanos)
                for period in PERIODS:
                    local.uncounted.append(
                        (time.monotonic(), period_start(period, now), cost.nanos)
                    )


def _ignore(cost: metering_pb2.Cost) -> None:
    """No budget applies: nothing to record."""
