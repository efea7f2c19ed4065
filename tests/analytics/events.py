"""Events for analytics tests: sensible defaults, any field overridable, published for real."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from llmops.bus.topology import DOCUMENT_EVENTS, INTERACTION_EVENTS, USAGE_EVENTS
from llmops.v1 import events_pb2, gateway_pb2, inference_pb2


def stamp(when: dt.datetime | None = None) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when or dt.datetime.now(dt.UTC))
    return ts


def interaction(tenant: str, **fields: Any) -> events_pb2.InteractionEvent:
    usage = fields.pop("usage", (100, 20))
    when = fields.pop("when", None)
    defaults: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "tenant": tenant,
        "key_id": "0123456789ab",
        "request_id": uuid.uuid4().hex,
        "api": "grpc.chat",
        "model_used": "triton/extractive_answerer",
        "prompt": "default",
        "prompt_version": "1",
        "total_ms": 100.0,
        "time_to_first_token_ms": 20.0,
        "cache": gateway_pb2.CACHE_STATUS_MISS,
        "status": "OK",
        "steps": [gateway_pb2.StepTiming(step="retrieval", ms=12.5)],
        "citations": [gateway_pb2.Citation(number=1, chunk_id="c1", doc_id="d1")],
    }
    return events_pb2.InteractionEvent(
        **{**defaults, **fields},
        time=stamp(when),
        usage=inference_pb2.Usage(input_tokens=usage[0], output_tokens=usage[1]),
    )


def usage_event(tenant: str, cost_nanos: int, **fields: Any) -> events_pb2.UsageEvent:
    when = fields.pop("when", None)
    defaults: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "tenant": tenant,
        "request_id": uuid.uuid4().hex,
        "model": "openai/gpt-4o-mini",
        "prompt": "default",
        "prompt_version": "1",
        "input_tokens": 1000,
        "output_tokens": 100,
        "currency": "USD",
        "priced": True,
        "price_version": "2026-11-01",
    }
    return events_pb2.UsageEvent(**{**defaults, **fields}, cost_nanos=cost_nanos, time=stamp(when))


def document_event(tenant: str, tokens: int, **fields: Any) -> events_pb2.DocumentEvent:
    when = fields.pop("when", None)
    defaults: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "tenant": tenant,
        "doc_id": uuid.uuid4().hex,
        "version": 1,
        "stage": "retrieval",
        "status": events_pb2.DOCUMENT_STATUS_INDEXED,
        "chunks": 3,
        "collection": "default",
    }
    return events_pb2.DocumentEvent(**{**defaults, **fields}, tokens=tokens, time=stamp(when))


def subject_of(event: Message) -> str:
    if isinstance(event, events_pb2.InteractionEvent):
        return INTERACTION_EVENTS
    if isinstance(event, events_pb2.UsageEvent):
        return USAGE_EVENTS
    if isinstance(event, events_pb2.DocumentEvent):
        status = events_pb2.DocumentStatus.Name(event.status).removeprefix("DOCUMENT_STATUS_")
        return f"{DOCUMENT_EVENTS}.{status.lower()}"
    raise TypeError(type(event).__name__)


async def publish(js: JetStreamContext, events: list[Any]) -> None:
    """Publish as the platform's publishers do: JetStream, with the event id as Nats-Msg-Id."""
    for event in events:
        await js.publish(
            subject_of(event), event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id}
        )
