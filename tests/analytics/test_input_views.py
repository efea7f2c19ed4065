"""What ClickHouse makes of the events it parses itself (migration 0006's input views), in
embedded chDB: enum names, clamped counts, exact money, absent timestamps, and a message
whose field came twice stored as protobuf reads it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client
from google.protobuf.message import Message

from analytics.tables import DOCUMENTS, FEEDBACK, INTERACTIONS, USAGE, EventTable, decode, insert
from llmops.bus.topology import (
    DOCUMENT_EVENTS,
    FEEDBACK_EVENTS,
    INTERACTION_EVENTS,
    USAGE_EVENTS,
)
from llmops.v1 import events_pb2, gateway_pb2
from tests.analytics.events import document_event, interaction, stamp, usage_event

T0 = dt.datetime(2026, 11, 3, 9, 30, 0, 123456, tzinfo=dt.UTC)
UNKNOWN = 99  # an enum value from a newer publisher


def _store(ch: Client, table: EventTable, subject: str, events: list[Message]) -> None:
    insert(ch, table, [decode(subject, e.SerializeToString())[2] for e in events])


def _rows(ch: Client, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in ch.query(sql).result_rows]


def _names(enum: Any, prefix: str) -> dict[int, str]:
    return {v.number: v.name.removeprefix(prefix).lower() for v in enum.DESCRIPTOR.values}


def test_enums_are_stored_by_their_short_names(ch: Client) -> None:
    """Every value the proto has today, from its descriptor: a value added to proto/ without
    its view learning it fails here; one the view has never heard of reads 'unspecified'."""
    caches = _names(gateway_pb2.CacheStatus, "CACHE_STATUS_")
    kept = _names(events_pb2.TextRetention, "TEXT_RETENTION_")
    numbers = {*caches, *kept, UNKNOWN}
    _store(
        ch,
        INTERACTIONS,
        INTERACTION_EVENTS,
        [interaction("acme", event_id=f"c{n}", cache=n, text_retention=n) for n in numbers],
    )
    stored = _rows(ch, "SELECT event_id, cache, text_retention FROM interactions")
    assert sorted(stored) == sorted(
        (f"c{n}", caches.get(n, "unspecified"), kept.get(n, "unspecified")) for n in numbers
    )
    statuses = {**_names(events_pb2.DocumentStatus, "DOCUMENT_STATUS_"), UNKNOWN: "unspecified"}
    _store(
        ch,
        DOCUMENTS,
        f"{DOCUMENT_EVENTS}.indexed",
        [document_event("acme", 1, event_id=f"d{n}", status=n) for n in statuses],
    )
    stored = _rows(ch, "SELECT event_id, status FROM documents")
    assert sorted(stored) == sorted((f"d{n}", statuses[n]) for n in statuses)


def test_an_interaction_is_reshaped_into_its_row(ch: Client) -> None:
    event = interaction(
        "acme",
        when=T0,
        usage=(-5, 30),  # a bug's negative count is 0
        steps=[
            gateway_pb2.StepTiming(step="retrieval", ms=12.5),
            gateway_pb2.StepTiming(step="inference", ms=80.25),
        ],
        citations=[
            gateway_pb2.Citation(number=1, doc_id="d1", chunk_id="d1:0"),
            gateway_pb2.Citation(number=2, doc_id="d2", chunk_id="d2:3"),
        ],
        failed_targets=["openai/gpt-4o"],
    )
    event.guardrails.policy = "acme/default"
    event.guardrails.policy_version = 4
    event.guardrails.fired.extend(["pii"])
    event.guardrails.blocked_passages = -1
    _store(ch, INTERACTIONS, INTERACTION_EVENTS, [event])
    assert _rows(
        ch,
        "SELECT time, input_tokens, output_tokens, steps, cited_doc_ids, cited_chunk_ids, "
        "failed_targets, guardrail_policy, guardrail_policy_version, guardrail_fired, "
        "guardrail_blocked_passages FROM interactions",
    ) == [
        (
            dt.datetime(2026, 11, 3, 9, 30, 0, 123000),  # ms, floored
            0,
            30,
            {"retrieval": 12.5, "inference": 80.25},
            ["d1", "d2"],
            ["d1:0", "d2:3"],
            ["openai/gpt-4o"],
            "acme/default",
            4,
            ["pii"],
            0,
        )
    ]


def test_money_is_exact_to_the_nano(ch: Client) -> None:
    big = 2**62 + 7  # beyond a double's 53 bits
    _store(
        ch,
        USAGE,
        USAGE_EVENTS,
        [usage_event("acme", big, event_id="big"), usage_event("acme", -3, event_id="neg")],
    )
    assert _rows(ch, "SELECT event_id, toString(cost) FROM usage ORDER BY event_id") == [
        ("big", "4611686018.427387911"),
        ("neg", "-0.000000003"),
    ]


def test_feedback_without_given_at_was_given_at_its_time(ch: Client) -> None:
    """Absent and the epoch are told apart: ClickHouse sees whether the message is there."""
    unset = events_pb2.FeedbackEvent(event_id="unset", tenant="acme", time=stamp(T0), thumbs=-4)
    epoch = events_pb2.FeedbackEvent(
        event_id="epoch", tenant="acme", time=stamp(T0), given_at=stamp(dt.datetime(1970, 1, 1))
    )
    _store(ch, FEEDBACK, FEEDBACK_EVENTS, [unset, epoch])
    assert _rows(ch, "SELECT event_id, thumbs, given_at FROM feedback ORDER BY event_id") == [
        ("epoch", 0, dt.datetime(1970, 1, 1)),
        ("unset", -1, dt.datetime(2026, 11, 3, 9, 30, 0, 123000)),
    ]


def test_a_field_sent_twice_is_stored_as_protobuf_reads_it(ch: Client) -> None:
    """Two encodings concatenated are one valid message, the later field winning;
    ClickHouse would read the repeated field as empty, so the writer re-encodes."""
    first = interaction("acme", event_id="twice", when=T0, model_used="a/old", status="OK")
    later = events_pb2.InteractionEvent(model_used="b/new", status="UNAVAILABLE")
    data = first.SerializeToString() + later.SerializeToString()
    insert(ch, INTERACTIONS, [decode(INTERACTION_EVENTS, data)[2]])
    assert _rows(ch, "SELECT event_id, tenant, model_used, status FROM interactions") == [
        ("twice", "acme", "b/new", "UNAVAILABLE")
    ]
