"""The analytics stage: a batch of events from JetStream becomes one insert per table.

The events go in as the protobuf messages they are: ClickHouse parses them and
its views make the rows (analytics.tables).

Acks come after the insert (the stage runner settles each message once this
returns), so an event is in ClickHouse before JetStream forgets it. A
redelivered event may already be stored (the insert landed, the ack did
not): redeliveries are checked against the table by event id and skipped,
so MVs never count an event twice. A view may have missed such an event (an
insert is not atomic across views), so its rollups are recomputed for it
first (analytics.rollups). First deliveries skip all this; the publishers'
`Nats-Msg-Id` already removes their own duplicates.

A replica writes only while it holds the writer lease (`may_write`, checked
before every insert): one paused past its lease leaves the batch to JetStream.

ClickHouse unreachable: the batch is retried for `outage_hold_s`, then goes
back to JetStream as `Unavailable` (never dead-lettered) and the service is
unhealthy until an insert or a health probe succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from analytics.clickhouse import ClickHouseError
from analytics.rollups import RollupRepair
from analytics.tables import EVENTS_WHERE, EventTable, Key, decode, events_where, insert
from llmops import metrics
from llmops.bus.stage import Delivery, PoisonMessage, Unavailable
from llmops.logging import get_logger
from llmops.service import Loaded

log = get_logger(__name__)
Health = Callable[[bool], Awaitable[None]]
_RETRY_S = (0.2, 0.5, 1.0, 2.0)


@dataclass
class _Pending:
    """One table's part of a batch: its deliveries, their keys and messages, index for index."""

    deliveries: list[Delivery] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    inserted: bool = False


class EventWriter:
    def __init__(
        self,
        client: Loaded[Client],
        outage_hold_s: float,
        health: Health,
        may_write: Callable[[], bool],
    ) -> None:
        self._client = client
        self._may_write = may_write
        self._hold_s = outage_hold_s
        self._health = health
        self._rollups = RollupRepair()

    async def handle(self, batch: Sequence[Delivery]) -> None:
        """The stage handler: decode, drop what is stored already, insert, report health."""
        pending: dict[str, tuple[EventTable, _Pending]] = {}
        for d in batch:
            try:
                table, key, message = decode(d.msg.subject, d.data)
            except PoisonMessage as exc:
                d.fail(exc)
                continue
            d.tenant = key[1]
            part = pending.setdefault(table.table, (table, _Pending()))[1]
            part.deliveries.append(d)
            part.keys.append(key)
            part.messages.append(message)
        deadline = time.monotonic() + self._hold_s
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._write, list(pending.values()), attempt > 0)
                await self._health(True)
                return
            except ClickHouseError as exc:
                await self._health(False)
                delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                attempt += 1
                if time.monotonic() + delay > deadline:
                    log.warning("analytics.clickhouse_down", error=str(exc), events=len(batch))
                    raise Unavailable(f"ClickHouse unavailable: {exc}") from exc
                await asyncio.sleep(delay)

    def _write(self, parts: list[tuple[EventTable, _Pending]], retry: bool) -> None:
        """Insert every table's events (in a worker thread: the client blocks).

        On a retry any event may have landed (an insert can fail after the server
        committed it), so every event is checked, not only redeliveries.
        """
        client = self._client.value
        for table, part in parts:
            if part.inserted:
                continue
            if not self._may_write():
                raise Unavailable("this replica no longer holds the writer lease")
            self._skip_stored(client, table, part, retry)
            if part.messages:
                insert(client, table, part.messages)
            part.inserted = True
            metrics.ANALYTICS_ROWS.labels(table.table).inc(len(part.messages))

    def _skip_stored(self, client: Client, table: EventTable, part: _Pending, retry: bool) -> None:
        """Drop events that are in the table already (acked without a second insert), after
        making the rollups they feed exact. A table of revisions keeps them: the same id
        may carry newer content."""
        again = [i for i, d in enumerate(part.deliveries) if retry or d.deliveries > 1]
        if not again or table.revisions:
            return
        keys = [part.keys[i] for i in again]
        stored = {
            r[0]
            for r in client.query(
                f"SELECT event_id FROM {table.table} WHERE {EVENTS_WHERE}",
                parameters=events_where(keys),
            ).result_rows
        }
        if not stored:
            return
        # Its views may have missed it (a crash between the table's part and theirs).
        self._rollups.repair(client, table.table, events_where([k for k in keys if k[2] in stored]))
        kept = [i for i, k in enumerate(part.keys) if k[2] not in stored]
        metrics.ANALYTICS_DUPLICATES.labels(table.table).inc(len(part.keys) - len(kept))
        part.deliveries[:] = [part.deliveries[i] for i in kept]
        part.keys[:] = [part.keys[i] for i in kept]
        part.messages[:] = [part.messages[i] for i in kept]
