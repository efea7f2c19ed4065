"""Events published to JetStream off the request's path, never lost to a brief NATS outage.

Events go through a bounded queue to one publisher task, so a reply never
waits for NATS. It takes what has piled up (up to _BATCH events), sends them
all at once and then waits for their acks together (`publish_async`): one
round trip per batch instead of one per event, and no task per event. Events
not acked in time are sent again with backoff until NATS takes them
(`Nats-Msg-Id` = event id, so a retry after a lost ack is not stored twice);
only when the queue is full, i.e. NATS has been away for a long time, are
events dropped, and each drop is logged and counted.

`emit_acked` is for an event that must outlive this process once the caller
acts on it (the gateway's interaction event, before the answer goes out): it
returns a future that JetStream's ack resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext
from nats.js.api import PubAck

from llmops import metrics
from llmops.logging import get_logger

log = get_logger(__name__)
_QUEUE_SIZE = 10_000
_BATCH = 512  # events sent before their acks are awaited
_ACK_TIMEOUT_S = 5.0
_MAX_BACKOFF_S = 1.0  # events wait no longer than this once NATS is back


def event_time(seconds: float) -> Timestamp:
    """An event's timestamp from `time.time()` seconds (to the nanosecond)."""
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


# subject, payload, headers, and the future of whoever waits for its ack
_Message = tuple[str, bytes, dict[str, str], "asyncio.Future[None] | None"]


class Event(Protocol):
    """Any event message of events.proto: it has an id and serialises itself."""

    event_id: str

    def SerializeToString(self) -> bytes: ...


class EventPublisher:
    def __init__(self, js: JetStreamContext, service: str) -> None:
        self._js = js
        self._service = service
        self._queue: asyncio.Queue[tuple[str, Event, asyncio.Future[None] | None]] = asyncio.Queue(
            _QUEUE_SIZE
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._publish_forever())

    def emit(self, subject: str, event: Event) -> None:
        self._put(subject, event, None)

    def emit_acked(self, subject: str, event: Event) -> asyncio.Future[None]:
        """Publish like `emit`; the future is done once JetStream stored the event."""
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._put(subject, event, acked)
        return acked

    def _put(self, subject: str, event: Event, acked: asyncio.Future[None] | None) -> None:
        try:
            self._queue.put_nowait((subject, event, acked))
        except asyncio.QueueFull:
            metrics.ERRORS.labels(self._service, "event_dropped").inc()
            log.error(
                "event.dropped", subject=subject, event_id=event.event_id, reason="queue full"
            )
            if acked is not None:
                acked.set_exception(RuntimeError("event queue full: NATS away too long"))

    async def _publish_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._publish(batch)
            for _ in batch:
                self._queue.task_done()

    async def _publish(self, batch: list[tuple[str, Event, asyncio.Future[None] | None]]) -> None:
        """Every event of `batch` acked by JetStream, however many rounds that takes."""
        pending: list[_Message] = [
            (
                subject,
                event.SerializeToString(),
                {"Nats-Msg-Id": event.event_id, "Content-Type": "application/protobuf"},
                acked,
            )
            for subject, event, acked in batch
        ]
        delay = 0.1
        while True:
            pending = await self._send(pending)
            if not pending:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF_S)

    async def _send(self, batch: list[_Message]) -> list[_Message]:
        """Send all, then await the acks together; what was not acked, to send again."""
        sent: list[tuple[_Message, asyncio.Future[PubAck]]] = []
        retry: list[_Message] = []
        errors: set[str] = set()
        for message in batch:
            subject, payload, headers, _ = message
            try:
                sent.append(
                    (message, await self._js.publish_async(subject, payload, headers=headers))
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not connected: keep it for the next round
                retry.append(message)
                errors.add(repr(exc))
        if sent:
            await asyncio.wait([ack for _, ack in sent], timeout=_ACK_TIMEOUT_S)
        for message, ack in sent:
            if not ack.done():
                ack.cancel()
                errors.add(f"no ack within {_ACK_TIMEOUT_S}s")
            elif ack.exception() is None:
                waiter = message[3]
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
                continue
            else:
                errors.add(repr(ack.exception()))
            retry.append(message)
        if retry:
            log.warning("event.publish_retry", events=len(retry), errors=sorted(errors))
        return retry

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Publish what is queued (up to `timeout_s`), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._task is not None:
            self._task.cancel()
        if not self._queue.empty():
            log.error("event.unpublished_at_stop", events=self._queue.qsize())
