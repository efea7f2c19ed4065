"""The analytics service as a process: events in over NATS, rows out over its SQL API."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import grpc
import pytest
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import (
    DLQ_STREAM,
    EVALUATION_EVENTS,
    FEEDBACK_EVENTS,
    GUARDRAIL_EVENTS,
    dlq_subject,
)
from llmops.v1 import events_pb2, gateway_pb2
from tests.analytics.events import document_event, interaction, publish, stamp, usage_event
from tests.analytics.service import AnalyticsProcess


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def test_every_event_type_lands_in_its_table(
    analytics: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    tenant = _tenant()
    chat = interaction(
        tenant,
        usage=(321, 54),
        cache=gateway_pb2.CACHE_STATUS_SEMANTIC_HIT,
        failed_targets=["openai/gpt-4o"],
        question="what is [email]?",
    )
    await publish(js, [chat, usage_event(tenant, 1_234_567), document_event(tenant, 900)])
    for subject, event in (
        (GUARDRAIL_EVENTS, events_pb2.GuardrailEvent(guardrail="pii", verdict="block")),
        (FEEDBACK_EVENTS, events_pb2.FeedbackEvent(score=-1, label="wrong")),
        (EVALUATION_EVENTS, events_pb2.EvaluationEvent(evaluator="faithfulness", score=0.8)),
    ):
        event.event_id, event.tenant = uuid.uuid4().hex, tenant
        event.time.CopyFrom(stamp())
        await js.publish(subject, event.SerializeToString())
    where = f"WHERE tenant = '{tenant}'"
    for table in ("interactions", "usage", "documents", "guardrail_verdicts", "feedback"):
        await analytics.wait_for(analyst_key, f"SELECT count() FROM {table} {where}", 1)
    await analytics.wait_for(analyst_key, f"SELECT count() FROM evaluations {where}", 1)
    row = await analytics.query(
        analyst_key,
        "SELECT event_id, input_tokens, output_tokens, cache, failed_targets, steps['retrieval'],"
        f" cited_doc_ids, question, status FROM interactions {where}",
    )
    assert list(row.rows[0]) == [
        chat.event_id,
        321,
        54,
        "semantic_hit",
        ["openai/gpt-4o"],
        12.5,
        ["d1"],
        "what is [email]?",
        "OK",
    ]
    cost = await analytics.query(analyst_key, f"SELECT toString(cost), priced FROM usage {where}")
    assert list(cost.rows[0]) == ["0.001234567", True]  # exact to the nano
    daily = await analytics.query(
        analyst_key, f"SELECT sum(requests), toString(sum(cost)) FROM usage_daily {where}"
    )
    assert list(daily.rows[0]) == [1, "0.001234567"]
    assert await analytics.scalar(analyst_key, f"SELECT status FROM documents {where}") == (
        "indexed"
    )


async def test_a_backlog_is_inserted_in_batches_of_the_set_size(
    analytics: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    """Stopped, the service leaves 2,500 events in JetStream; started, it takes them 1,000 at
    a time (LLMOPS_ANALYTICS_BATCH_SIZE), and a lone event is not held back waiting for more."""
    tenant = _tenant()
    analytics.stop()
    await publish(js, [interaction(tenant) for _ in range(2500)])
    analytics.start()
    await analytics.wait_healthy()
    await analytics.wait_for(
        analyst_key, f"SELECT count() FROM interactions WHERE tenant = '{tenant}'", 2500
    )
    sizes = await analytics.query(
        analyst_key,
        f"SELECT count() AS n FROM interactions WHERE tenant = '{tenant}' "
        "GROUP BY inserted_at ORDER BY n DESC",
    )
    counts = [int(r[0]) for r in sizes.rows]
    assert counts[0] == 1000 and len(counts) <= 4, counts
    lone = interaction(tenant)
    started = time.monotonic()
    await publish(js, [lone])
    await analytics.wait_for(
        analyst_key, f"SELECT count() FROM interactions WHERE event_id = '{lone.event_id}'", 1
    )
    assert time.monotonic() - started < 2.0  # flush interval 0.2 s, not a full batch


async def test_restarts_and_crashes_lose_nothing_and_count_nothing_twice(
    analytics: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    tenant = _tenant()
    events = [interaction(tenant) for _ in range(3000)]

    async def publish_slowly() -> None:
        for i in range(0, len(events), 100):
            await publish(js, events[i : i + 100])
            await asyncio.sleep(0.05)

    publishing = asyncio.create_task(publish_slowly())
    await asyncio.sleep(0.5)
    analytics.stop(signal.SIGTERM)  # graceful: the batch in hand is finished
    analytics.start()
    await analytics.wait_healthy()
    await asyncio.sleep(0.3)
    analytics.stop(signal.SIGKILL)  # a crash: whatever was unacked comes again
    analytics.start()
    await analytics.wait_healthy()
    await publishing
    where = f"WHERE tenant = '{tenant}'"
    await analytics.wait_for(analyst_key, f"SELECT count() FROM interactions {where}", 3000)
    assert (
        await analytics.scalar(analyst_key, f"SELECT uniqExact(event_id) FROM interactions {where}")
        == 3000
    )
    await analytics.wait_for(analyst_key, f"SELECT sum(requests) FROM latency_hourly {where}", 3000)


async def test_poison_events_go_to_the_dead_letter_subject(
    analytics: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    tenant = _tenant()
    sub = await js.subscribe(dlq_subject("analytics"), stream=DLQ_STREAM.name)
    await js.publish("llmops.events.interaction", b"\x08\x96\x01 garbage \xff")
    await js.publish("llmops.events.brand_new", interaction(tenant).SerializeToString())
    await publish(js, [interaction(tenant)])
    reasons = set()
    for _ in range(2):
        msg = await sub.next_msg(timeout=10)
        letter = events_pb2.DeadLetter.FromString(msg.data)
        assert letter.stage == "analytics"
        reasons.add((letter.subject, letter.reason[:30]))
    assert reasons == {
        ("llmops.events.interaction", "not a InteractionEvent: Error "),
        ("llmops.events.brand_new", "no analytics table for subject"),
    }
    await analytics.wait_for(
        analyst_key, f"SELECT count() FROM interactions WHERE tenant = '{tenant}'", 1
    )
    await sub.unsubscribe()


async def test_sql_is_read_only_for_every_key(
    analytics: AnalyticsProcess, analyst_key: str
) -> None:
    for sql in (
        "INSERT INTO interactions (tenant) VALUES ('x')",
        "DROP TABLE interactions",
        "ALTER TABLE usage DELETE WHERE 1",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "CREATE TABLE x (a UInt8) ENGINE = Memory",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await analytics.query(analyst_key, sql)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, sql
        assert "read-only" in str(refused.value.details())
    assert await analytics.scalar(analyst_key, "SELECT count() FROM interactions") >= 0


async def test_a_tenant_key_sees_only_its_tenant(
    analytics: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    mine, theirs = _tenant(), _tenant()
    await publish(js, [interaction(mine) for _ in range(3)] + [interaction(theirs)])
    await publish(js, [usage_event(mine, 10), usage_event(theirs, 1_000_000)])
    await analytics.wait_for(
        analyst_key, f"SELECT count() FROM usage WHERE tenant IN ('{mine}', '{theirs}')", 2
    )
    await analytics.wait_for(
        analyst_key,
        f"SELECT count() FROM interactions WHERE tenant IN ('{mine}', '{theirs}')",
        4,
    )
    key = (await KeyAdmin(js).create_key(mine)).key
    await asyncio.sleep(0.3)  # the service's key watch sees the new key
    seen = await analytics.query(key, "SELECT DISTINCT tenant FROM interactions")
    assert [list(r) for r in seen.rows] == [[mine]] and seen.tenant == mine
    for sql in (
        f"SELECT count() FROM interactions WHERE tenant = '{theirs}'",
        f"SELECT count() FROM (SELECT * FROM usage WHERE tenant = '{theirs}')",
        f"SELECT count() FROM usage_daily WHERE tenant = '{theirs}'",
        "SELECT count() FROM interactions AS a JOIN usage AS b ON a.tenant = b.tenant "
        f"WHERE b.tenant = '{theirs}'",
    ):
        assert await analytics.scalar(key, sql) == 0, sql
    assert await analytics.scalar(key, "SELECT count() FROM interactions") == 3
    for sql in (
        "SELECT name FROM system.tables",
        "SELECT * FROM numbers(3)",
        "SHOW TABLES",
        "INSERT INTO interactions (tenant) VALUES ('x')",
        "SELECT 1 SETTINGS additional_table_filters = {}",
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await analytics.query(key, sql)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, sql


async def test_query_errors_and_limits(analytics: AnalyticsProcess, analyst_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await analytics.query("llmops-000000000000-" + "x" * 43, "SELECT 1")
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await analytics.query(analyst_key, "SELEKT 1")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Syntax error" in str(bad.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as slow:
        await analytics.query(analyst_key, "SELECT count() FROM numbers(100000000000)", timeout_s=1)
    assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    capped = await analytics.query(analyst_key, "SELECT number FROM numbers(50)", max_rows=7)
    assert len(capped.rows) == 7 and capped.truncated
    typed = await analytics.query(
        analyst_key,
        "SELECT {n:UInt64} AS big, toDecimal64(1.5, 3) AS d, toDate('2026-01-02') AS day, "
        "[1, 2] AS a, NULL AS nothing",
        parameters={"n": str(2**60)},
    )
    assert [c.name for c in typed.columns] == ["big", "d", "day", "a", "nothing"]
    assert list(typed.rows[0]) == [str(2**60), "1.500", "2026-01-02", [1, 2], None]
