"""Which table each event subject lands in, and how one event becomes one row.

The row builders run once per event on the ingest hot path (50k events/s
aim), so they are plain functions over the protobuf fields: no reflection,
no intermediate dicts. Column order here is the insert's column list; the
DDL lives in deploy/clickhouse/migrations/.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

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
from llmops.v1 import events_pb2, gateway_pb2

Row = tuple[Any, ...]
_NANO = Decimal("1e-9")


def _enum_names(enum: Any, prefix: str) -> dict[int, str]:
    """{value: short lowercase name}, e.g. CACHE_STATUS_EXACT_HIT -> exact_hit."""
    return {v: n.removeprefix(prefix).lower() for n, v in enum.items()}


_CACHE = _enum_names(gateway_pb2.CacheStatus, "CACHE_STATUS_")
_DOC_STATUS = _enum_names(events_pb2.DocumentStatus, "DOCUMENT_STATUS_")
_RETENTION = _enum_names(events_pb2.TextRetention, "TEXT_RETENTION_")


def _millis(ts: Timestamp) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _count(n: int) -> int:
    """Token and size counts are unsigned columns; a negative count from a bug is 0, not a crash."""
    return n if n > 0 else 0


def _sign(n: int) -> int:
    """Thumbs are an Int8 of -1, 0 or +1; any other value from a bug keeps its direction."""
    return (n > 0) - (n < 0)


@dataclass(frozen=True)
class EventTable:
    table: str
    message: type[Message]
    columns: tuple[str, ...]
    to_row: Callable[[Any], Row]
    # An event id stored again with newer content (a changed judgement, a run's end):
    # a redelivery is inserted again rather than skipped as a duplicate; the
    # ReplacingMergeTree keeps one row per id, and queries read its latest revision.
    revisions: bool = False


def _interaction(e: events_pb2.InteractionEvent) -> Row:
    usage = e.usage
    citations = e.citations
    guardrails = e.guardrails
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.request_id,
        e.trace_id,
        e.api,
        e.model_requested,
        e.model_used,
        list(e.failed_targets),
        e.prompt,
        e.prompt_version,
        _count(usage.input_tokens),
        _count(usage.output_tokens),
        e.time_to_first_token_ms,
        e.total_ms,
        e.overhead_ms,
        {s.step: s.ms for s in e.steps},
        _CACHE.get(e.cache, "unspecified"),
        [c.doc_id for c in citations],
        [c.chunk_id for c in citations],
        e.status,
        e.error,
        e.streamed,
        e.collection,
        _RETENTION.get(e.text_retention, "unspecified"),
        e.question,
        e.answer,
        guardrails.policy,
        guardrails.policy_version,
        guardrails.input_action,
        guardrails.output_action,
        list(guardrails.fired),
        guardrails.input_ms,
        guardrails.output_ms,
        _count(guardrails.blocked_passages),
        e.prompt_label,
        e.prompt_arm,
    )


def _document(e: events_pb2.DocumentEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.doc_id,
        e.version,
        e.stage,
        _DOC_STATUS.get(e.status, "unspecified"),
        _count(e.chunks),
        _count(e.tokens),
        _count(e.content_bytes),
        e.reason,
        e.trace_id,
        e.source,
        e.collection,
    )


def _usage(e: events_pb2.UsageEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.request_id,
        e.model,
        e.prompt,
        e.prompt_version,
        _count(e.input_tokens),
        _count(e.output_tokens),
        _count(e.cached_input_tokens),
        _count(e.reasoning_tokens),
        Decimal(e.cost_nanos) * _NANO,
        e.currency,
        e.priced,
        e.price_version,
    )


def _guardrail(e: events_pb2.GuardrailEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.request_id,
        e.trace_id,
        e.guardrail,
        e.direction,
        e.verdict,
        e.score,
        e.reason,
        e.latency_ms,
        e.policy,
        e.policy_version,
        e.shadow,
        list(e.span_types),
        e.unscanned,
        e.action,
        e.passed,
        e.api,
    )


def _feedback(e: events_pb2.FeedbackEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.request_id,
        e.trace_id,
        e.score,
        e.label,
        e.comment,
        e.source,
        _sign(e.thumbs),
        _millis(e.given_at if e.HasField("given_at") else e.time),  # unset: judged then
    )


def _budget_alert(e: events_pb2.BudgetAlertEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.period,
        e.period_start,
        e.threshold,
        Decimal(e.spend_nanos) * _NANO,
        Decimal(e.limit_nanos) * _NANO,
        e.currency,
    )


def _evaluation(e: events_pb2.EvaluationEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.request_id,
        e.trace_id,
        e.run_id,
        e.evaluator,
        e.score,
        e.passed,
        e.model,
        e.prompt,
        e.prompt_version,
        e.dataset,
        e.reason,
        e.item_id,
        e.dataset_version,
        e.prompt_label,
        e.prompt_arm,
        e.kind,
    )


def _eval_run(e: events_pb2.EvalRunEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.key_id,
        e.status,
        e.dataset,
        e.dataset_version,
        e.prompt,
        e.prompt_version,
        e.model,
        dict(e.settings),
        _count(e.items),
        _count(e.failed_items),
        _millis(e.finished_at),
        dict(e.summary),
        _count(e.judge_input_tokens),
        _count(e.judge_output_tokens),
        Decimal(e.judge_cost_nanos) * _NANO,
        e.currency,
        e.reason,
        _count(e.concurrency),
        _count(e.evaluations),
    )


def _drift(e: events_pb2.DriftEvent) -> Row:
    return (
        _millis(e.time),
        e.tenant,
        e.event_id,
        e.signal,
        e.method,
        e.statistic,
        e.p_value,
        e.threshold,
        e.drifted,
        _millis(e.reference_start),
        _millis(e.reference_end),
        _millis(e.recent_start),
        _millis(e.recent_end),
        _count(e.n_reference),
        _count(e.n_recent),
    )


_KEY = ("time", "tenant", "event_id")
INTERACTIONS = EventTable(
    "interactions",
    events_pb2.InteractionEvent,
    (
        *_KEY,
        "key_id",
        "request_id",
        "trace_id",
        "api",
        "model_requested",
        "model_used",
        "failed_targets",
        "prompt",
        "prompt_version",
        "input_tokens",
        "output_tokens",
        "time_to_first_token_ms",
        "total_ms",
        "overhead_ms",
        "steps",
        "cache",
        "cited_doc_ids",
        "cited_chunk_ids",
        "status",
        "error",
        "streamed",
        "collection",
        "text_retention",
        "question",
        "answer",
        "guardrail_policy",
        "guardrail_policy_version",
        "guardrail_input_action",
        "guardrail_output_action",
        "guardrail_fired",
        "guardrail_input_ms",
        "guardrail_output_ms",
        "guardrail_blocked_passages",
        "prompt_label",
        "prompt_arm",
    ),
    _interaction,
)
DOCUMENTS = EventTable(
    "documents",
    events_pb2.DocumentEvent,
    (
        *_KEY,
        "doc_id",
        "version",
        "stage",
        "status",
        "chunks",
        "tokens",
        "content_bytes",
        "reason",
        "trace_id",
        "source",
        "collection",
    ),
    _document,
)
USAGE = EventTable(
    "usage",
    events_pb2.UsageEvent,
    (
        *_KEY,
        "key_id",
        "request_id",
        "model",
        "prompt",
        "prompt_version",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "cost",
        "currency",
        "priced",
        "price_version",
    ),
    _usage,
)
GUARDRAIL_VERDICTS = EventTable(
    "guardrail_verdicts",
    events_pb2.GuardrailEvent,
    (
        *_KEY,
        "key_id",
        "request_id",
        "trace_id",
        "guardrail",
        "direction",
        "verdict",
        "score",
        "reason",
        "latency_ms",
        "policy",
        "policy_version",
        "shadow",
        "span_types",
        "unscanned",
        "action",
        "passed",
        "api",
    ),
    _guardrail,
)
FEEDBACK = EventTable(
    "feedback",
    events_pb2.FeedbackEvent,
    (
        *_KEY,
        "key_id",
        "request_id",
        "trace_id",
        "score",
        "label",
        "comment",
        "source",
        "thumbs",
        "given_at",
    ),
    _feedback,
    revisions=True,
)
EVALUATIONS = EventTable(
    "evaluations",
    events_pb2.EvaluationEvent,
    (
        *_KEY,
        "request_id",
        "trace_id",
        "run_id",
        "evaluator",
        "score",
        "passed",
        "model",
        "prompt",
        "prompt_version",
        "dataset",
        "reason",
        "item_id",
        "dataset_version",
        "prompt_label",
        "prompt_arm",
        "kind",
    ),
    _evaluation,
)
EVAL_RUNS = EventTable(
    "eval_runs",
    events_pb2.EvalRunEvent,
    (
        *_KEY,
        "key_id",
        "status",
        "dataset",
        "dataset_version",
        "prompt",
        "prompt_version",
        "model",
        "settings",
        "items",
        "failed_items",
        "finished_at",
        "summary",
        "judge_input_tokens",
        "judge_output_tokens",
        "judge_cost",
        "currency",
        "reason",
        "concurrency",
        "evaluations",
    ),
    _eval_run,
    revisions=True,
)
DRIFT = EventTable(
    "drift_events",
    events_pb2.DriftEvent,
    (
        *_KEY,
        "signal",
        "method",
        "statistic",
        "p_value",
        "threshold",
        "drifted",
        "reference_start",
        "reference_end",
        "recent_start",
        "recent_end",
        "n_reference",
        "n_recent",
    ),
    _drift,
)
BUDGET_ALERTS = EventTable(
    "budget_alerts",
    events_pb2.BudgetAlertEvent,
    (
        *_KEY,
        "key_id",
        "period",
        "period_start",
        "threshold",
        "spend",
        "limit_amount",
        "currency",
    ),
    _budget_alert,
)
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


# Given rows' own events in their table: (tenant, time) narrows the read to their
# granules, event_id picks them. Parameters from `events_where`.
EVENTS_WHERE = (
    "tenant IN {tenants:Array(String)} AND time BETWEEN fromUnixTimestamp64Milli({lo:Int64}) "
    "AND fromUnixTimestamp64Milli({hi:Int64}) AND event_id IN {ids:Array(String)}"
)


def events_where(rows: Sequence[Row]) -> dict[str, Any]:
    """EVENTS_WHERE's parameters for these rows (at least one)."""
    return {
        "tenants": sorted({r[1] for r in rows}),
        "lo": min(r[0] for r in rows),
        "hi": max(r[0] for r in rows),
        "ids": [r[2] for r in rows],
    }


def table_for(subject: str) -> EventTable:
    table = _BY_SUBJECT.get(subject)
    if table is None and subject.startswith(_DOCUMENT_PREFIX):
        table = DOCUMENTS
    if table is None:
        raise PoisonMessage(f"no analytics table for subject {subject!r} (a newer event type?)")
    return table


def decode(subject: str, data: bytes) -> tuple[EventTable, Row]:
    """The table and row of one event; PoisonMessage when it can never be stored."""
    table = table_for(subject)
    try:
        event: Any = table.message.FromString(data)
    except DecodeError as exc:
        raise PoisonMessage(f"not a {table.message.__name__}: {exc}") from None
    if not event.event_id or not event.tenant or not event.HasField("time"):
        raise PoisonMessage(
            f"{table.message.__name__} without event_id, tenant or time", tenant=event.tenant
        )
    return table, table.to_row(event)
