"""Which table each event subject lands in, and what the writer needs of each event.

ClickHouse turns the events into rows itself: a batch's messages go, length-
delimited (`FORMAT Protobuf`), into the event table's `<table>_input`, a Null
table whose materialized view reshapes each message into the table's row
(deploy/clickhouse/migrations/0006_protobuf_inputs.sql); the table's own views,
the rollups, then run as for any insert. Python only decodes each event once,
to refuse what can never be stored and to read its key (the id checks on
redelivery need it): building rows in Python was half the writer's time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from google.protobuf.message import DecodeError, Message

from analytics.protoschema import descriptor, schema_text, type_name
from llmops.bus.stage import PoisonMessage
from llmops.bus.topology import (
    BUDGET_EVENTS,
    DOCUMENT_EVENTS,
    DRIFT_EVENTS,
    EVAL_RUN_EVENTS,
    EVALUATION_EVENTS,
    FEEDBACK_EVENTS,
    GUARDRAIL_EVENTS,
    INTERACTION_EVENTS,
    USAGE_EVENTS,
)
from llmops.v1 import events_pb2

# An event's (time in ms, tenant, event_id): what finds its row again.
Key = tuple[int, str, str]


@dataclass(frozen=True)
class EventTable:
    table: str
    message: type[Message]
    # An event id stored again with newer content (a changed judgement, a run's end):
    # a redelivery is inserted again rather than skipped as a duplicate; the
    # ReplacingMergeTree keeps one row per id, and queries read its latest revision.
    revisions: bool = False

    @property
    def input(self) -> str:
        """The Null table the events are inserted into (its view writes `table`)."""
        return f"{self.table}_input"

    @functools.cached_property
    def input_settings(self) -> dict[str, str]:
        """How ClickHouse reads the messages: the schema text travels with each insert."""
        message = descriptor(self.message)
        return {
            "format_schema_source": "string",
            "format_schema": schema_text(message),
            "format_schema_message_name": type_name(message),
        }


INTERACTIONS = EventTable("interactions", events_pb2.InteractionEvent)
DOCUMENTS = EventTable("documents", events_pb2.DocumentEvent)
USAGE = EventTable("usage", events_pb2.UsageEvent)
GUARDRAIL_VERDICTS = EventTable("guardrail_verdicts", events_pb2.GuardrailEvent)
FEEDBACK = EventTable("feedback", events_pb2.FeedbackEvent, revisions=True)
EVALUATIONS = EventTable("evaluations", events_pb2.EvaluationEvent)
EVAL_RUNS = EventTable("eval_runs", events_pb2.EvalRunEvent, revisions=True)
DRIFT = EventTable("drift_events", events_pb2.DriftEvent)
BUDGET_ALERTS = EventTable("budget_alerts", events_pb2.BudgetAlertEvent)
EVENT_TABLES = (
    INTERACTIONS,
    DOCUMENTS,
    USAGE,
    GUARDRAIL_VERDICTS,
    FEEDBACK,
    EVALUATIONS,
    BUDGET_ALERTS,
    EVAL_RUNS,
    DRIFT,
)
_BY_SUBJECT = {
    INTERACTION_EVENTS: INTERACTIONS,
    USAGE_EVENTS: USAGE,
    GUARDRAIL_EVENTS: GUARDRAIL_VERDICTS,
    FEEDBACK_EVENTS: FEEDBACK,
    EVALUATION_EVENTS: EVALUATIONS,
    BUDGET_EVENTS: BUDGET_ALERTS,
    EVAL_RUN_EVENTS: EVAL_RUNS,
    DRIFT_EVENTS: DRIFT,
}
_DOCUMENT_PREFIX = DOCUMENT_EVENTS + "."


# Given events in their table: (tenant, time) narrows the read to their granules,
# event_id picks them. Parameters from `events_where`.
EVENTS_WHERE = (
    "tenant IN {tenants:Array(String)} AND time BETWEEN fromUnixTimestamp64Milli({lo:Int64}) "
    "AND fromUnixTimestamp64Milli({hi:Int64}) AND event_id IN {ids:Array(String)}"
)


def events_where(keys: Sequence[Key]) -> dict[str, Any]:
    """EVENTS_WHERE's parameters for these events (at least one)."""
    return {
        "tenants": sorted({k[1] for k in keys}),
        "lo": min(k[0] for k in keys),
        "hi": max(k[0] for k in keys),
        "ids": [k[2] for k in keys],
    }


def table_for(subject: str) -> EventTable:
    table = _BY_SUBJECT.get(subject)
    if table is None and subject.startswith(_DOCUMENT_PREFIX):
        table = DOCUMENTS
    if table is None:
        raise PoisonMessage(f"no analytics table for subject {subject!r} (a newer event type?)")
    return table


def decode(subject: str, data: bytes) -> tuple[EventTable, Key, bytes]:
    """The table, key and message bytes of one event; PoisonMessage when it can never be stored.

    The bytes are the decoded message encoded again: protobuf lets a field come twice
    (the last one counts), and ClickHouse reads such a field as empty.
    """
    table = table_for(subject)
    try:
        event: Any = table.message.FromString(data)
    except DecodeError as exc:
        raise PoisonMessage(f"not a {table.message.__name__}: {exc}") from None
    if not event.event_id or not event.tenant or not event.HasField("time"):
        raise PoisonMessage(
            f"{table.message.__name__} without event_id, tenant or time", tenant=event.tenant
        )
    time = event.time
    key = (time.seconds * 1000 + time.nanos // 1_000_000, event.tenant, event.event_id)
    return table, key, event.SerializeToString()


def insert(client: Client, table: EventTable, messages: Sequence[bytes]) -> None:
    """One insert of these messages (decode's bytes) into `table`, through its input view."""
    client.raw_insert(
        table.input,
        insert_block=b"".join(_length_delimited(messages)),
        settings=table.input_settings,
        fmt="Protobuf",
    )


_BYTE = [bytes((i,)) for i in range(256)]


def _length_delimited(messages: Sequence[bytes]) -> list[bytes]:
    """Each message after its length as a varint: ClickHouse's `Protobuf` framing."""
    out = []
    for m in messages:
        n = len(m)
        while n > 0x7F:
            out.append(_BYTE[n & 0x7F | 0x80])
            n >>= 7
        out.append(_BYTE[n])
        out.append(m)
    return out
