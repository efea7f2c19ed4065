"""Hard budgets at the gateway: refuse a tenant's or a key's request once its spend hits the limit.

Spend comes from metering's counters in NATS KV, followed by watches (no
round trip per request), plus what this replica's own finished requests cost
until metering has counted them (a counter lists the last requests it took).
Far from a limit requests run freely: even if every replica
(`LLMOPS_GATEWAY_REPLICAS`, the most that run at once) had as many requests in
flight and not yet counted as this one, each at the dearest cost seen, the
spend would stay under it.
Near a limit a replica runs one request of that budget at a time, and starts
the next only once metering has counted the previous one (if metering falls
behind by more than `COUNTED_WAIT_S`, the next is refused as UNAVAILABLE), so
every replica has at most one request that the others cannot see yet: the
limit holds to within one request per replica — and one more per gateway that
crashed meanwhile, since its successor cannot know what it had not yet seen
counted.
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
from llmops.kvmirror import model_mirror
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

COUNTED_WAIT_S = 2.0  # longest a near-limit request waits for metering to count the last one
# A cost metering never showed stops counting locally this long after the ack wait: a
# metering replica that crashed holding it gets it redelivered (to a replica) only then.
FORGET_MARGIN_S = 30.0
Record = Callable[[metering_pb2.Cost, str], None]


@dataclass
class _Uncounted:
    when: float
    starts: dict[Period, str]
    nanos: int


@dataclass
class _Local:
    """This replica's view of one budget between metering's updates."""

    in_flight: int = 0
    dearest: int = 0  # the largest cost of one request seen (nanos)
    uncounted: dict[str, _Uncounted] = field(default_factory=dict)  # by request id
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BudgetGuard:
    def __init__(
        self,
        replicas: int = 1,
        ack_wait_s: float = 60.0,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        """`ack_wait_s`: metering's redelivery delay, which bounds how late metering can
        count a request (a replica that crashed holding it)."""
        self._replicas = replicas
        self._forget_after_s = ack_wait_s + FORGET_MARGIN_S
        self._clock = clock
        self.budgets = model_mirror(BUDGETS_BUCKET, Budget)
        self.spend = model_mirror(SPEND_BUCKET, Spend)
        self._locals: dict[str, _Local] = {}

    async def start(self, js: JetStreamContext) -> None:
        await self.budgets.start(js)
        await self.spend.start(js)

    async def stop(self) -> None:
        await self.budgets.stop()
        await self.spend.stop()

    @contextlib.asynccontextmanager
    async def admit(self, key: KeyRecord) -> AsyncIterator[Record]:
        """Run one request under its budgets; the caller records its cost and request id."""
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
                    local = self._local(b)
                    await held.enter_async_context(local.turn)
                    await self._until_counted(b, local)
                    self._refuse_if_spent(b, self._clock())
            for b in budgets:
                self._local(b).in_flight += 1
            try:
                yield lambda cost, request_id: self._record(budgets, cost, request_id, now)
            finally:
                for b in budgets:
                    self._local(b).in_flight -= 1

    def _local(self, budget: Budget) -> _Local:
        return self._locals.setdefault(budget.key, _Local())

    def _counter(self, budget: Budget, period: Period, start: str) -> Spend | None:
        return self.spend.get(spend_key(budget.tenant, budget.key_id, period, start))

    def _prune(self, budget: Budget, local: _Local) -> None:
        """Forget own costs metering has counted (or that are too old to still wait for)."""
        oldest = time.monotonic() - self._forget_after_s
        for request_id, u in list(local.uncounted.items()):
            counter = self._counter(budget, "day", u.starts["day"])
            if u.when < oldest or (counter is not None and request_id in counter.recent):
                del local.uncounted[request_id]

    async def _until_counted(self, budget: Budget, local: _Local) -> None:
        """Near the limit: wait until metering counted this replica's last request. If it
        falls behind (down, or NATS failing over), refuse rather than guess: UNAVAILABLE,
        which a caller retries, instead of a second request the others cannot see."""
        deadline = time.monotonic() + COUNTED_WAIT_S
        self._prune(budget, local)
        while local.uncounted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            self._prune(budget, local)
        if local.uncounted:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                f"the spend of {budget.label} is near its limit and metering has not counted "
                f"this gateway's last request within {COUNTED_WAIT_S:.0f} s; retry shortly",
                retry_after_s=COUNTED_WAIT_S,
            )

    def _spent(self, budget: Budget, period: Period, now: dt.datetime) -> int:
        start = period_start(period, now)
        counter = self._counter(budget, period, start)
        counted = counter.spend.get(budget.currency, 0) if counter else 0
        local = self._local(budget)
        self._prune(budget, local)
        return counted + sum(u.nanos for u in local.uncounted.values() if u.starts[period] == start)

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
        counter = self._counter(budget, "day", period_start("day", now))
        dearest = max(local.dearest, counter.dearest if counter else 0)
        self._prune(budget, local)
        # Every replica as busy as this one: in flight, finished but not counted yet, and one more.
        margin = dearest * (local.in_flight + len(local.uncounted) + 1) * self._replicas
        return any(
            budget.limit(p) and self._spent(budget, p, now) + margin >= budget.limit(p)
            for p in PERIODS
        )

    def _record(
        self, budgets: list[Budget], cost: metering_pb2.Cost, request_id: str, now: dt.datetime
    ) -> None:
        for b in budgets:
            if cost.priced and cost.currency == b.currency and cost.nanos:
                local = self._local(b)
                local.dearest = max(local.dearest, cost.nanos)
                starts = {p: period_start(p, now) for p in PERIODS}
                local.uncounted[request_id] = _Uncounted(time.monotonic(), starts, cost.nanos)


def _ignore(cost: metering_pb2.Cost, request_id: str) -> None:
    """No budget applies: nothing to record."""
