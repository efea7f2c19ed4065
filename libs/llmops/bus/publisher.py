"""Events published to JetStream off the request's path, never lost to a brief NATS outage.

Events go through a bounded queue to a few publisher tasks, so a reply never
waits for NATS. A publish that fails is retried with backoff until NATS takes
it (`Nats-Msg-Id` = event id, so a retry after a lost ack is not stored twice);
only when the queue is full, i.e. NATS has been away for a long time, are
events dropped, and each drop is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from llmops import metrics
from llmops.logging import get_logger

log = get_logger(__name__)
_QUEUE_SIZE = 10_000
_PUBLISHERS = 4


def event_time(seconds: float) -> Timestamp:
    """An event's timestamp from `time.time()` seconds (to the nanosecond)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class Event(Protocol):
    """Any event message of events.proto: it has an id and serialises itself."""

    event_id: str

    def SerializeToString(self) -> bytes: ...


class EventPublisher:
    def __init__(self, js: JetStreamContext, service: str) -> None:
        self._js = js
        self._service = service
        self._queue: asyncio.Queue[tuple[str, Event]] = asyncio.Queue(_QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publish_forever()) for _ in range(_PUBLISHERS)]

    def emit(self, subject: str, event: Event) -> None:
        try:
            self._queue.put_nowait((subject, event))
        except asyncio.QueueFull:
            metrics.ERRORS.labels(self._service, "event_dropped").inc()
            log.error(
                "event.dropped", subject=subject, event_id=event.event_id, reason="queue full"
            )

    async def _publish_forever(self) -> None:
        while True:
            subject, event = await self._queue.get()
            await self._publish(subject, event)
            self._queue.task_done()

    async def _publish(self, subject: str, event: Event) -> None:
        payload = event.SerializeToString()
        headers = {"Nats-Msg-Id": event.event_id, "Content-Type": "application/protobuf"}
        delay = 0.1
        while True:
            try:
                await self._js.publish(subject, payload, headers=headers)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event.publish_retry", event_id=event.event_id, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to `timeout_s`), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._tasks:
            task.cancel()
        if not self._queue.empty():
            log.error("event.unpublished_at_stop", events=self._queue.qsize())
