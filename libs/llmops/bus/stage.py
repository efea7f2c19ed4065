"""The stage runner: how every JetStream consumer of the platform handles a batch.

A stage pulls a batch from its durable consumer (nats-py pull subscription,
explicit acks), hands it to the service's handler, then settles each message:

* handled            -> ack (only after the handler durably published its output);
* `PoisonMessage`    -> dead letter at once (`llmops.dlq.<stage>`, with the reason), then ack;
* `Unavailable`      -> nak with backoff, never dead-lettered: a store the stage needs is
                        down, the message is fine and waits in JetStream however long it takes;
* any other error    -> nak with backoff; after `max_deliver` attempts, dead letter.

A dead letter is acked only after JetStream confirmed it, so a message is
never lost: if the DLQ publish fails the message is redelivered instead.
While a batch is being handled the runner tells JetStream it is in progress,
so slow batches (embedding) are not redelivered behind its back.

Why nats-py and not FastStream's pull subscriber: FastStream 0.7.8's batch
pull loop catches `nats.errors.TimeoutError`, but nats-py 2.16's `fetch`
raises a plain `TimeoutError` when an idle fetch expires, so the loop crashed
and was restarted by FastStream's task supervisor about once a second per
stage, and it waited for a full batch (latency) instead of taking what is
there. This loop is small, and acks stay explicit and visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from llmops import metrics
from llmops.bus.bulkpull import BulkPuller
from llmops.bus.topology import Consumer, dlq_subject
from llmops.logging import get_logger
from llmops.tracing import TRACEPARENT, trace_id_of
from llmops.v1 import events_pb2

log = get_logger(__name__)


class PoisonMessage(Exception):
    """A message that can never succeed (malformed, unsupported, too large): dead-letter it now."""

    def __init__(self, reason: str, *, tenant: str = "", doc_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant
        self.doc_id = doc_id


class Unavailable(Exception):
    """A dependency is down: the message waits in JetStream and is never dead-lettered for it."""


@dataclass
class Delivery:
    """One message of a batch; the handler records a per-message failure in `error`."""

    msg: Msg
    error: BaseException | None = None
    tenant: str = ""
    doc_id: str = ""

    @property
    def data(self) -> bytes:
        return bytes(self.msg.data)

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.msg.headers or {})

    @property
    def _ack(self) -> list[str]:
        """The ack subject's numbers: delivered, stream sequence, consumer sequence, ...

        `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...`, or with a domain
        and an account hash after ACK: nats-py's `metadata` also builds timestamps,
        which costs more than the rest of a bulk message's handling. Split on each use:
        cheaper than functools.cached_property, whose first access takes a lock (3.11).
        """
        tokens = (self.msg.reply or "").split(".")
        if len(tokens) < 9:
            return []
        return tokens[4:] if len(tokens) == 9 else tokens[6:]

    @property
    def deliveries(self) -> int:
        """How many times JetStream delivered it."""
        return int(self._ack[0]) if self._ack else 1

    @property
    def stream_sequence(self) -> int:
        return int(self._ack[1]) if self._ack else 0

    def fail(self, error: BaseException) -> None:
        self.error = error


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]
DeadLetterHook = Callable[[Delivery, str], Awaitable[None]]


@dataclass(frozen=True)
class StageOptions:
    batch_size: int = 64
    fetch_timeout_s: float = 1.0  # how long an idle fetch waits (bounds stop latency)
    linger_s: float = 0.0  # how long a batch keeps filling after its first message (0: not)
    max_deliver: int = 5
    ack_wait_s: float = 60.0
    backoff_s: tuple[float, ...] = (0.5, 2.0, 5.0, 15.0, 30.0)


class Stage:
    """Runs a handler over a durable pull consumer until stopped."""

    def __init__(
        self,
        name: str,
        consumer: Consumer,
        handler: BatchHandler,
        js: Callable[[], JetStreamContext],
        options: StageOptions,
        on_dead_letter: DeadLetterHook | None = None,
        nc: Callable[[], Client] | None = None,
    ) -> None:
        """`nc` (the NATS client) is needed only with `linger_s`, for bulk pulls."""
        self.name = name
        self.consumer = consumer
        self.handler = handler
        self._js = js
        self._nc = nc
        self.options = options
        self.on_dead_letter = on_dead_letter
        self._task: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._running = False

    async def start(self) -> None:
        """Create (or update) the durable consumer and start pulling."""
        js = self._js()
        await js.add_consumer(
            self.consumer.stream.name, self.consumer.config(self.options.ack_wait_s)
        )
        self._running = True
        pulling: Coroutine[None, None, None]
        if self.options.linger_s > 0:
            if self._nc is None:
                raise ValueError(f"stage {self.name}: linger_s needs the NATS client")
            puller = BulkPuller(
                self._nc(), self.consumer, self.options.batch_size, self.options.linger_s
            )
            await puller.start()
            pulling = self._pull_bulk(puller)
        else:
            self._subscription = await js.pull_subscribe_bind(
                self.consumer.durable, self.consumer.stream.name
            )
            pulling = self._pull(self._subscription)
        self._task = asyncio.create_task(pulling, name=f"stage-{self.name}")

    async def stop(self) -> None:
        """Finish the batch in hand (it is settled), then stop pulling."""
        self._running = False
        if self._task is not None:
            await self._task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _pull(self, subscription: JetStreamContext.PullSubscription) -> None:
        # fetch() returns as soon as any message is available (up to batch_size), so a
        # lone document is handled at once and a backlog is handled in full batches.
        while self._running:
            try:
                msgs = await subscription.fetch(
                    self.options.batch_size, timeout=self.options.fetch_timeout_s
                )
            except TimeoutError:  # nothing to do (nats-py raises both flavours of it)
                continue
            except Exception as exc:  # disconnected: nats-py reconnects, we retry
                log.warning("stage.fetch_failed", stage=self.name, error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if not msgs:  # nats-py may end an idle fetch with an empty list
                continue
            await self.process(msgs)

    async def _pull_bulk(self, puller: BulkPuller) -> None:
        # The next batch gathers while this one is handled (an insert waits on its store).
        gathering = asyncio.create_task(puller.next_batch())
        while self._running:
            msgs = await gathering
            if self._running:
                gathering = asyncio.create_task(puller.next_batch())
            if msgs:
                await self.process(msgs)
        for msg in await gathering:  # gathered but not handled: straight back to JetStream
            with contextlib.suppress(Exception):
                await msg.nak()
        await puller.stop()

    async def process(self, msgs: list[Msg]) -> None:
        """Handle one batch and settle every message in it (never raises)."""
        started = time.perf_counter()
        replayed = self.consumer.replay_prefix + "."
        for m in msgs:  # a replayed dead letter is handled as from the subject it first came on
            if m.subject.startswith(replayed):
                m.subject = m.subject[len(replayed) :]
        batch = [Delivery(m) for m in msgs]
        heartbeat = asyncio.create_task(self._keep_alive(batch))
        try:
            await self.handler(batch)
        except Exception as exc:  # the whole batch failed (e.g. NATS or a store is down)
            log.warning("stage.batch_failed", stage=self.name, error=str(exc), size=len(batch))
            for d in batch:
                if d.error is None:
                    d.fail(exc)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._settle(batch)
        metrics.STAGE_BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)

    async def _keep_alive(self, batch: Sequence[Delivery]) -> None:
        while True:
            await asyncio.sleep(self.options.ack_wait_s / 3)
            for d in batch:
                with contextlib.suppress(Exception):
                    await d.msg.in_progress()

    async def _settle(self, batch: Sequence[Delivery]) -> None:
        acked = 0
        for d in batch:
            try:
                if d.error is None:
                    await d.msg.ack()
                    acked += 1
                else:
                    await self._settle_failure(d)
            except Exception as exc:  # NATS unreachable: JetStream redelivers after ack_wait
                log.error("stage.settle_failed", stage=self.name, error=str(exc))
                metrics.ERRORS.labels(self.name, "settle").inc()
        metrics.STAGE_MESSAGES.labels(self.name, "ok").inc(acked)

    async def _settle_failure(self, d: Delivery) -> None:
        error = d.error
        poison = isinstance(error, PoisonMessage)
        exhausted = d.deliveries >= self.options.max_deliver
        if poison or (exhausted and not isinstance(error, Unavailable)):
            reason = (
                error.reason
                if isinstance(error, PoisonMessage)
                else f"gave up after {d.deliveries} deliveries: {error}"
            )
            await self._dead_letter(d, reason)
            await d.msg.ack()
            metrics.STAGE_MESSAGES.labels(self.name, "dead_lettered").inc()
            return
        delay = self.options.backoff_s[min(d.deliveries, len(self.options.backoff_s)) - 1]
        log.warning(
            "stage.retry",
            stage=self.name,
            error=str(error),
            deliveries=d.deliveries,
            delay_s=delay,
            doc_id=d.doc_id,
            tenant=d.tenant,
        )
        await d.msg.nak(delay=delay)
        metrics.STAGE_MESSAGES.labels(self.name, "retried").inc()

    async def _dead_letter(self, d: Delivery, reason: str) -> None:
        error = d.error
        if isinstance(error, PoisonMessage):
            d.tenant = d.tenant or error.tenant
            d.doc_id = d.doc_id or error.doc_id
        now = Timestamp()
        now.GetCurrentTime()
        letter = events_pb2.DeadLetter(
            stage=self.name,
            reason=reason,
            error_type=type(error).__name__,
            subject=d.msg.subject,
            payload=d.data,
            headers=d.headers,
            deliveries=d.deliveries,
            time=now,
            trace_id=trace_id_of(d.headers.get(TRACEPARENT, "")),
            tenant=d.tenant,
            doc_id=d.doc_id,
        )
        await self._js().publish(dlq_subject(self.name), letter.SerializeToString())
        log.error(
            "stage.dead_lettered",
            stage=self.name,
            reason=reason,
            tenant=d.tenant,
            doc_id=d.doc_id,
            deliveries=d.deliveries,
        )
        if self.on_dead_letter is not None:
            await self.on_dead_letter(d, reason)
