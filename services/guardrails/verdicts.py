"""Verdicts as they leave the service: protobuf for the caller, GuardrailEvents for analytics.

Events carry types, offsets-free span kinds, scores and reasons, never a
matched value or a placeholder mapping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from guardrails.engine import Verdict
from llmops.guardrails.events import Asked, guardrail_event
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


def events_for(
    verdicts: Iterable[Verdict],
    policy: Policy,
    direction: str,
    action: str,
    asked: Asked,
    *,
    shadow: bool = False,
) -> list[events_pb2.GuardrailEvent]:
    """One event per scanner: a check over several passages or streamed pieces is summed up."""
    return [
        guardrail_event(
            asked,
            policy,
            direction,
            guardrail=verdict.scanner,
            verdict=verdict.action if verdict.fired else "allow",
            score=verdict.score,
            reason=verdict.reason,
            latency_ms=verdict.latency_ms,
            shadow=shadow,
            span_types=sorted({s.type for s in verdict.spans}),
            unscanned=verdict.unscanned,
            action=action,
            passed=verdict.passed,
        )
        for verdict in merge_by_scanner(verdicts)
    ]


def merge_by_scanner(verdicts: Iterable[Verdict]) -> list[Verdict]:
    """One verdict per scanner: the highest score, every span, the summed latency."""
    merged: dict[str, Verdict] = {}
    for v in verdicts:
        m = merged.get(v.scanner)
        if m is None:
            # a copy: its span lists grow with the other passages' or pieces' findings
            merged[v.scanner] = replace(
                v, spans=list(v.spans), replacements=list(v.replacements), passage=-1
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
