"""GuardrailEvents, built one way by whoever records a verdict: the guardrails service for
what its scanners found, the gateway for a check that could not run (fail open)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from llmops.guardrails.policy import Policy
from llmops.v1 import events_pb2


@dataclass(frozen=True, slots=True)
class Asked:
    """The request a check belongs to, and who asked (gateway, ingestion, api)."""

    tenant: str
    key_id: str
    request_id: str
    trace_id: str
    caller: str


def guardrail_event(
    asked: Asked, policy: Policy, direction: str, **fields: Any
) -> events_pb2.GuardrailEvent:
    """An event with its id, time, request and policy set; `fields` are the verdict's."""
    event = events_pb2.GuardrailEvent(
        event_id=uuid.uuid4().hex,
        tenant=asked.tenant,
        key_id=asked.key_id,
        request_id=asked.request_id,
        trace_id=asked.trace_id,
        direction=direction,
        policy=policy.policy_id,
        policy_version=policy.version,
        api=asked.caller,
        **fields,
    )
    event.time.FromNanoseconds(time.time_ns())
    return event
