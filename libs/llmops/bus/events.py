"""Publishing document outcome events (`llmops.events.document.<status>`).

The CLI's `ingest --wait` and the tests watch these to know when a document
is searchable or why it failed; analytics will store them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from llmops import metrics
from llmops.bus.stage import DeadLetterHook, Delivery
from llmops.bus.topology import DOCUMENT_EVENTS
from llmops.ids import UNKNOWN_TENANT
from llmops.tracing import current_trace_id
from llmops.v1 import documents_pb2, events_pb2

Status: TypeAlias = events_pb2.DocumentStatus.ValueType


def status_name(status: Status) -> str:
    """`DOCUMENT_STATUS_INDEXED` -> `indexed` (the subject token and CLI wording)."""
    return events_pb2.DocumentStatus.Name(status).removeprefix("DOCUMENT_STATUS_").lower()


def document_event(
    stage: str,
    status: Status,
    doc: documents_pb2.ChunkedDocument | None = None,
    *,
    tenant: str = "",
    doc_id: str = "",
    reason: str = "",
    chunks: int = 0,
    tokens: int = 0,
    content_bytes: int = 0,
) -> events_pb2.DocumentEvent:
    now = Timestamp()
    now.GetCurrentTime()
    event = events_pb2.DocumentEvent(
        event_id=str(uuid.uuid4()),
        time=now,
        stage=stage,
        status=status,
        tenant=tenant,
        doc_id=doc_id,
        reason=reason,
        chunks=chunks,
        tokens=tokens,
        content_bytes=content_bytes,
        trace_id=current_trace_id(),
    )
    if doc is not None:
        event.tenant = doc.tenant
        event.doc_id = doc.doc_id
        event.version = doc.version
        event.source = doc.source
        event.collection = doc.collection
        event.content_bytes = content_bytes or doc.content_bytes
    return event


_OUTCOME_SPACE = uuid.uuid5(uuid.NAMESPACE_URL, "llmops:document-outcome")


def same_outcome_id(event: events_pb2.DocumentEvent) -> events_pb2.DocumentEvent:
    """Give `event` an id made of what it reports (stage, status, document version), so
    read replicas that each index a document publish one event between them (JetStream
    drops the copies by their Nats-Msg-Id, analytics by event id)."""
    key = f"{event.stage}:{event.status}:{event.tenant}:{event.doc_id}:{event.version}"
    event.event_id = str(uuid.uuid5(_OUTCOME_SPACE, key))
    return event


async def publish_document_event(js: JetStreamContext, event: events_pb2.DocumentEvent) -> None:
    """Publish durably (JetStream ack) so an outcome is never reported and then lost."""
    name = status_name(event.status)
    await js.publish(
        f"{DOCUMENT_EVENTS}.{name}",
        event.SerializeToString(),
        headers={"Nats-Msg-Id": event.event_id},
    )
    metrics.DOCUMENTS.labels(event.stage, name).inc()


def failure_events(stage: str, js: Callable[[], JetStreamContext]) -> DeadLetterHook:
    """A dead-letter hook that emits the FAILED event accompanying every document dead letter.

    Every one carries a tenant and a time, so analytics stores it rather than
    dead-lettering the event in turn.
    """

    async def publish_failure(delivery: Delivery, reason: str) -> None:
        await publish_document_event(
            js(),
            document_event(
                stage,
                events_pb2.DOCUMENT_STATUS_FAILED,
                # Undecodable, or its tenant refused: still stored, where only
                # all-tenants keys look.
                tenant=delivery.tenant or UNKNOWN_TENANT,
                doc_id=delivery.doc_id,
                reason=reason,
                content_bytes=len(delivery.data),
            ),
        )

    return publish_failure
