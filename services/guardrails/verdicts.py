"""Verdicts as they leave the service: protobuf for the caller, GuardrailEvents for analytics.

Events carry types, offsets-free span kinds, scores and reasons, never a
matched value or a placeholder mapping.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from guardrails.engine import Verdict
from llmops.guardrails.policy import Policy
from llmops.v1 import events_pb2, guardrails_pb2


def verdict_proto(verdict: Verdict) -> guardrails_pb2.Verdict:
    spans = [
        guardrails_pb2.Span(
            type=s.type,
            start=s.start,
            end=s.end,
            score=s.score,
            replacement=verdict.replacements[i] if i < len(verdict.replacements) else "",
        )
        for i, s in enumerate(verdict.spans)
    ]
    return guardrails_pb2.Verdict(
        scanner=verdict.scanner,
        score=verdict.score,
        passed=verdict.passed,
        spans=spans,
        latency_ms=verdict.latency_ms,
        action=verdict.action if verdict.fired else "",
        reason=verdict.reason,
        unscanned=verdict.unscanned,
        passage=max(verdict.passage, 0),
    )


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Who asked, for the events."""

    tenant: str
    request_id: str
    key_id: str
    trace_id: str
    caller: str


def events_for(
    verdicts: Iterable[Verdict],
    policy: Policy,
    direction: str,
    action: str,
    asked: CheckContext,
    *,
    shadow: bool = False,
) -> list[events_pb2.GuardrailEvent]:
    """One event per scanner: a check over several passages or streamed pieces is summed up."""
    merged = merge_by_scanner(verdicts)
    now = time.time_ns()
    events = []
    for verdict in merged:
        event = events_pb2.GuardrailEvent(
            event_id=uuid.uuid4().hex,
            tenant=asked.tenant,
            key_id=asked.key_id,
            request_id=asked.request_id,
            trace_id=asked.trace_id,
            guardrail=verdict.scanner,
            direction=direction,
            verdict=verdict.action if verdict.fired else "allow",
            score=verdict.score,
            reason=verdict.reason,
            latency_ms=verdict.latency_ms,
            policy=policy.policy_id,
            policy_version=policy.version,
            shadow=shadow,
            span_types=sorted({s.type for s in verdict.spans}),
            unscanned=verdict.unscanned,
            action=action,
            passed=verdict.passed,
            api=asked.caller,
        )
        event.time.FromNanoseconds(now)
        events.append(event)
    return events


def merge_by_scanner(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """One verdict per scanner: the highest score, every span, the summed latency."""
    merged: dict[str, Verdict] = {}
    for v in verdicts:
        m = merged.get(v.scanner)
        if m is None:
            merged[v.scanner] = Verdict(
                v.scanner,
                v.score,
                v.passed,
                v.action,
                v.latency_ms,
                list(v.spans),
                list(v.replacements),
                v.reason,
                v.unscanned,
            )
            continue
        m.score = max(m.score, v.score)
        if v.fired and not m.fired:
            m.reason = v.reason
        m.passed = m.passed and v.passed
        m.unscanned = m.unscanned or v.unscanned
        m.latency_ms = round(m.latency_ms + v.latency_ms, 3)
        m.spans.extend(v.spans)
    return list(merged.values())


def fired_scanners(verdicts: Sequence[Verdict]) -> list[str]:
    return sorted({v.scanner for v in verdicts if v.fired})
