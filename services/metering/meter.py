"""The metering stage: each interaction priced, published as a UsageEvent, added to spend.

Every spend counter keeps the stream sequences it took above the consumer's
ack floor (a few: the consumer lets one batch be unacked), so a redelivered
interaction is published again (JetStream drops the duplicate by its
Nats-Msg-Id) but never counted again, in whatever order it comes back. A
request that used no tokens (refused, failed before the model, a cache hit)
costs nothing and is not metered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmops.apikeys import KEY_ID_RE, TENANT_RE
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import BUDGET_EVENTS, METERING_CONSUMER, USAGE_EVENTS
from llmops.kvmirror import KvMirror
from llmops.logging import get_logger
from llmops.pricebook import PriceBook
from llmops.service import Loaded
from llmops.spend import (
    PERIODS,
    RECENT_REQUESTS,
    Budget,
    Period,
    Spend,
    budget_key,
    period_start,
    spend_key,
)
from llmops.v1 import events_pb2, metering_pb2

log = get_logger(__name__)
_ID_SPACE = uuid.UUID("5b0c1f4e-6a59-4f51-9d0e-6f1c2a7e9b10")  # usage/alert event ids


@dataclass
class _Counter:
    """One spend counter's share of a batch."""

    tenant: str
    key_id: str
    period: Period
    start: str
    items: list[tuple[int, events_pb2.InteractionEvent, metering_pb2.Cost]] = field(
        default_factory=list
    )


class Meter:
    def __init__(
        self,
        js: Loaded[JetStreamContext],
        spend: Loaded[KeyValue],
        prices: PriceBook,
        budgets: KvMirror[Budget],
    ) -> None:
        self._js = js
        self._spend = spend
        self._prices = prices
        self._budgets = budgets

    async def handle(self, batch: Sequence[Delivery]) -> None:
        counters: dict[str, _Counter] = {}
        publishes = []
        for i, d in enumerate(batch):
            try:
                event = events_pb2.InteractionEvent.FromString(d.data)
            except DecodeError as exc:
                d.fail(PoisonMessage(f"not an InteractionEvent: {exc}"))
                continue
            d.tenant = event.tenant
            if event.usage.input_tokens + event.usage.output_tokens <= 0:
                continue  # nothing ran: nothing to meter
            if not TENANT_RE.match(event.tenant) or not KEY_ID_RE.match(event.key_id):
                d.fail(PoisonMessage(f"no valid tenant and key id: {event.tenant!r}"))
                continue
            at = event.time.ToDatetime(dt.UTC)
            cost = self._prices.cost(event.model_used, at, event.usage)
            publishes.append(self._publish_usage(event, cost))
            seq = d.stream_sequence
            for key_id in ("", event.key_id):
                for period in PERIODS:
                    start = period_start(period, at)
                    key = spend_key(event.tenant, key_id, period, start)
                    counter = counters.setdefault(
                        key, _Counter(event.tenant, key_id, period, start)
                    )
                    counter.items.append((seq, event, cost))
            if i % 64 == 63:
                await asyncio.gather(*publishes)
                publishes.clear()
        await asyncio.gather(*publishes)
        if counters:
            info = await self._js.value.consumer_info(
                METERING_CONSUMER.stream.name, METERING_CONSUMER.durable
            )
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            for key, counter in counters.items():
                await self._apply(key, counter, floor)

    async def _publish_usage(
        self, event: events_pb2.InteractionEvent, cost: metering_pb2.Cost
    ) -> None:
        usage = events_pb2.UsageEvent(
            event_id=str(uuid.uuid5(_ID_SPACE, f"usage:{event.event_id}")),
            time=event.time,
            tenant=event.tenant,
            key_id=event.key_id,
            request_id=event.request_id,
            model=event.model_used,
            prompt=event.prompt,
            prompt_version=event.prompt_version,
            input_tokens=event.usage.input_tokens,
            output_tokens=event.usage.output_tokens,
            cached_input_tokens=event.usage.cached_input_tokens,
            reasoning_tokens=event.usage.reasoning_tokens,
            cost_nanos=cost.nanos,
            currency=cost.currency,
            priced=cost.priced,
            price_version=cost.price_version,
        )
        await self._js.value.publish(
            USAGE_EVENTS, usage.SerializeToString(), headers={"Nats-Msg-Id": usage.event_id}
        )

    async def _apply(self, key: str, counter: _Counter, floor: int) -> None:
        """Add the batch's share to one counter (compare-and-set), then alert if due."""
        kv = self._spend.value
        while True:
            try:
                entry = await kv.get(key)
                spend = Spend.model_validate_json(entry.value or b"{}")
                revision: int | None = entry.revision
            except KeyNotFoundError:
                spend = Spend(tenant=counter.tenant, key_id=counter.key_id)
                revision = None
            taken = set(spend.applied)
            fresh = [(s, e, c) for s, e, c in counter.items if s > floor and s not in taken]
            if not fresh:
                return  # all applied before (a redelivery)
            spend.applied = sorted(s for s in taken if s > floor)
            for seq, event, cost in fresh:
                spend.requests += 1
                spend.input_tokens += event.usage.input_tokens
                spend.output_tokens += event.usage.output_tokens
                spend.applied.append(seq)
                spend.recent.append(event.request_id)
                if cost.priced:
                    spend.spend[cost.currency] = spend.spend.get(cost.currency, 0) + cost.nanos
                    spend.dearest = max(spend.dearest, cost.nanos)
                else:
                    spend.unpriced += 1
                    if event.model_used not in spend.unpriced_models:
                        spend.unpriced_models.append(event.model_used)
            del spend.recent[:-RECENT_REQUESTS]
            alerts = self._due_alerts(counter, spend)
            for threshold in alerts:
                spend.alerted.append(threshold)
            try:
                value = spend.model_dump_json().encode()
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # changed meanwhile: read it again
            for threshold in alerts:
                await self._publish_alert(key, counter, spend, threshold)
            return

    def _due_alerts(self, counter: _Counter, spend: Spend) -> list[float]:
        budget = self._budgets.get(budget_key(counter.tenant, counter.key_id))
        if budget is None or not budget.limit(counter.period):
            return []
        limit = budget.limit(counter.period)
        spent = spend.spend.get(budget.currency, 0)
        return [
            t
            for t in sorted({*budget.alert_at, 1.0})
            if t not in spend.alerted and spent >= t * limit
        ]

    async def _publish_alert(
        self, key: str, counter: _Counter, spend: Spend, threshold: float
    ) -> None:
        budget = self._budgets.get(budget_key(counter.tenant, counter.key_id))
        assert budget is not None
        alert = events_pb2.BudgetAlertEvent(
            event_id=str(uuid.uuid5(_ID_SPACE, f"alert:{key}:{threshold}")),
            tenant=counter.tenant,
            key_id=counter.key_id,
            period=counter.period,
            period_start=counter.start,
            threshold=threshold,
            spend_nanos=spend.spend.get(budget.currency, 0),
            limit_nanos=budget.limit(counter.period),
            currency=budget.currency,
        )
        alert.time.GetCurrentTime()
        await self._js.value.publish(
            BUDGET_EVENTS, alert.SerializeToString(), headers={"Nats-Msg-Id": alert.event_id}
        )
        log.warning(
            "metering.budget_alert",
            budget=budget.label,
            period=counter.period,
            threshold=threshold,
            spend_nanos=alert.spend_nanos,
            limit_nanos=alert.limit_nanos,
        )
