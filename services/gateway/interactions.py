"""What an interaction event keeps of a request's text (LLMOPS_EVENT_TEXT)."""

from __future__ import annotations

from llmops.redaction import redact
from llmops.v1 import events_pb2

_RETENTION = {
    "off": events_pb2.TEXT_RETENTION_OFF,
    "redacted": events_pb2.TEXT_RETENTION_REDACTED,
    "full": events_pb2.TEXT_RETENTION_FULL,
}


def apply_retention(
    event: events_pb2.InteractionEvent, policy: str, question: str, answer: str
) -> None:
    """Fill the event's text fields as the retention policy allows."""
    event.text_retention = _RETENTION[policy]
    if policy == "full":
        event.question, event.answer = question, answer
    elif policy == "redacted":
        event.question, event.answer = redact(question), redact(answer)
