"""One InteractionEvent per request, published to JetStream off the request's path.

Events go through a bounded queue to a few publisher tasks, so a reply never
waits for NATS. A publish that fails is retried with backoff until NATS takes
it (`Nats-Msg-Id` = event id, so a retry after a lost ack is not stored twice);
only when the queue is full, i.e. NATS has been away for a long time, are
events dropped, and each drop is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js import JetStreamContext

from llmops import metrics
from llmops.bus.topology import INTERACTION_EVENTS
from llmops.logging import get_logger
from llmops.redaction import redact
from llmops.v1 import events_pb2

log = get_logger(__name__)
_RETENTION = {
    "off": events_pb2.TEXT_RETENTION_OFF,
    "redacted": events_pb2.TEXT_RETENTION_REDACTED,
    "full": events_pb2.TEXT_RETENTION_FULL,
}
_QUEUE_SIZE = 10_000
_PUBLISHERS = 4


def apply_retention(
    event: events_pb2.InteractionEvent, policy: str, question: str, answer: str
) -> None:
    """Fill the event's text fields as the retention policy allows."""
    event.text_retention = _RETENTION[policy]
    if policy == "full":
        event.question, event.answer = question, answer
    elif policy == "redacted":
        event.question, event.answer = redact(question), redact(answer)


class InteractionPublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._queue: asyncio.Queue[events_pb2.InteractionEvent] = asyncio.Queue(_QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publish_forever()) for _ in range(_PUBLISHERS)]

    def emit(self, event: events_pb2.InteractionEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.ERRORS.labels("gateway", "interaction_event_dropped").inc()
            log.error("interaction.dropped", event_id=event.event_id, reason="queue full")

    async def _publish_forever(self) -> None:
        while True:
            event = await self._queue.get()
            await self._publish(event)
            self._queue.task_done()

    async def _publish(self, event: events_pb2.InteractionEvent) -> None:
        payload = event.SerializeToString()
        headers = {"Nats-Msg-Id": event.event_id, "Content-Type": "application/protobuf"}
        delay = 0.1
        while True:
            try:
                await self._js.publish(INTERACTION_EVENTS, payload, headers=headers)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("interaction.publish_retry", event_id=event.event_id, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to `timeout_s`), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._tasks:
            task.cancel()
        if not self._queue.empty():
            log.error("interaction.unpublished_at_stop", events=self._queue.qsize())
