"""The runtime every service is built on: NATS connection, JetStream topology, gRPC server,
metrics endpoint, pipeline stages, start-up/shutdown hooks and signal handling.

A service's `create_app(settings)` only builds a `ServiceApp` and registers its
parts (no I/O, no model loading); `run()` does the I/O, loads what start-up
hooks load, and reports SERVING on gRPC health only once everything is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import nats
import uvloop
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from llmops import metrics
from llmops.bus.stage import BatchHandler, DeadLetterHook, Stage, StageOptions
from llmops.bus.topology import Consumer, ensure_topology
from llmops.grpcutil import MAX_MESSAGE_BYTES, GrpcServer, Registrar
from llmops.logging import configure_logging, get_logger
from llmops.settings import CommonSettings, nats_servers, port_of
from llmops.tracing import configure_tracing

log = get_logger(__name__)
Hook = Callable[[], Awaitable[None]]
T = TypeVar("T")


class Loaded(Generic[T]):
    """A resource loaded at start-up (a model, a store), shared by a service's edges.

    Handlers are built by `create_app`, before anything is loaded; they keep
    this box and read `.value` when they work, which fails loudly if start-up
    has not run instead of handing out None.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._value: T | None = None

    def set(self, value: T) -> None:
        self._value = value

    def take(self) -> T | None:
        """Remove and return the resource (for shutdown)."""
        value, self._value = self._value, None
        return value

    @property
    def value(self) -> T:
        if self._value is None:
            raise RuntimeError(f"{self._what} is not loaded yet")
        return self._value


class ServiceApp:
    def __init__(
        self,
        name: str,
        settings: CommonSettings,
        *,
        grpc_addr: str | None,
        metrics_port: int,
        grpc_services: Sequence[str] = (),
        grpc_max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        """`grpc_addr` is this service's address in the address book; it listens on its port."""
        self.name = name
        self.settings = settings
        port = settings.grpc_port or (port_of(grpc_addr) if grpc_addr else None)
        self.grpc_address = f"{settings.bind_host}:{port}" if grpc_addr else None
        self.metrics_port = metrics_port
        self.grpc_services = list(grpc_services)
        self.grpc_max_message_bytes = grpc_max_message_bytes
        self._nc: Client | None = None
        self.stages: list[Stage] = []
        self._registrars: list[Registrar] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._js: JetStreamContext | None = None
        self._stop = asyncio.Event()
        self.grpc: GrpcServer | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._gates: dict[Stage, Hook] = {}
        self._gated: list[asyncio.Task[None]] = []

    # -- assembly (no I/O) ----------------------------------------------------
    def add_grpc(self, registrar: Registrar) -> None:
        self._registrars.append(registrar)

    def add_stage(
        self,
        consumer: Consumer,
        handler: BatchHandler,
        *,
        batch_size: int,
        linger_s: float = 0.0,
        on_dead_letter: DeadLetterHook | None = None,
        starts_after: Hook | None = None,
    ) -> Stage:
        """Consume `consumer` in batches; redelivery bounds come from the common settings.

        `starts_after`: the stage starts once this returns, in the background (a standby
        serves its gRPC API while it waits for the writer lease), else at start-up.

        The stage is named after the consumer's durable (its dead letters go to
        `llmops.dlq.<durable>`), so a service with two stages keeps their letters apart
        and a replay finds the one consumer that refused the message.
        """
        opts = StageOptions(
            batch_size=batch_size,
            linger_s=linger_s,
            max_deliver=self.settings.max_deliver,
            ack_wait_s=consumer.redelivery_s(self.settings.ack_wait_s),
        )
        stage = Stage(
            consumer.durable, consumer, handler, lambda: self.js, opts, on_dead_letter, self._client
        )
        self.stages.append(stage)
        if starts_after is not None:
            self._gates[stage] = starts_after
        return stage

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    def _client(self) -> Client:
        if self._nc is None:
            raise RuntimeError("not connected to NATS yet")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("not connected to NATS yet")
        return self._js

    # -- lifecycle -------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(self._stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            log.info("service.ready", grpc=self.grpc_address, metrics_port=self.metrics_port)
            await stopping
        else:  # stopped while starting (a standby waiting for its lease, NATS not up yet)
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        await self.stop()

    async def start(self) -> None:
        if self.metrics_port:
            metrics.serve_metrics(self.metrics_port, self.settings.bind_host)
        if self.grpc_address:
            # Listen early (NOT_SERVING) so probes see a live process while models load.
            self.grpc = GrpcServer(
                self.grpc_address,
                self.grpc_services,
                self._registrars,
                self.grpc_max_message_bytes,
            )
            await self.grpc.start()
            await self.grpc.set_serving(False)
        await self._connect()
        for hook in self._startup:
            await hook()
        for stage in self.stages:
            if stage in self._gates:
                self._gated.append(asyncio.create_task(self._start_after(stage)))
            else:
                await stage.start()
        self._lag_task = asyncio.create_task(self._report_lag())
        if self.grpc:
            await self.grpc.set_serving(True)

    async def _start_after(self, stage: Stage) -> None:
        """Start a gated stage once its gate opens, retrying until JetStream takes it.

        Nothing awaits this task until stop, so a failure here would leave a ready
        service that consumes nothing (seen: a new analytics writer whose consumer
        update met a leader election, and held its lease for a minute doing nothing).
        """
        await self._gates[stage]()
        delay = 0.2
        while True:
            try:
                await stage.start()
                return
            except Exception as exc:  # not CancelledError: a stop still ends the wait
                log.warning("stage.start_failed", stage=stage.name, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def stop(self) -> None:
        log.info("service.stopping")
        for task in self._gated:  # a stage still waiting never starts
            task.cancel()
        await asyncio.gather(*self._gated, return_exceptions=True)
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self.grpc:
            await self.grpc.set_serving(False)
        for stage in self.stages:
            await stage.stop()  # the batch in hand is finished and settled
        if self.grpc:
            await self.grpc.stop(grace=5)  # calls in flight finish, with NATS still there
        for hook in reversed(self._shutdown):
            try:
                await hook()  # hooks may still publish (events in flight)
            except Exception:
                if self._lag_task is not None:
                    raise
                # stopped while starting: a hook may find what it closes never opened
                log.warning("service.shutdown_hook_failed", exc_info=True)
        if self._nc is not None:
            await self._nc.drain()
        log.info("service.stopped")

    def request_stop(self) -> None:
        self._stop.set()

    async def _connect(self) -> None:
        """Connect to NATS, waiting for it if it is not up yet (start order must not matter)."""
        delay = 0.2
        while True:
            try:
                self._nc = await nats.connect(
                    nats_servers(self.settings.nats_url),
                    name=f"llmops-{self.name}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    # A node that stops answering (frozen, partitioned) is left for another
                    # within ~6 s, not nats-py's default 2 min x 2.
                    ping_interval=2,
                    max_outstanding_pings=3,
                    error_cb=_log_nats_error,
                    disconnected_cb=_log_disconnected,
                    reconnected_cb=_log_reconnected,
                )
                break
            except Exception as exc:
                log.warning("nats.unavailable", url=self.settings.nats_url, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._js = self._nc.jetstream()
        delay = 0.2
        while True:  # a cluster still electing its leaders answers no JetStream request
            try:
                await ensure_topology(self._js, self.settings.js_replicas)
                return
            except (
                NoRespondersError,
                NoStreamResponseError,
                ServiceUnavailableError,
                TimeoutError,
            ) as exc:
                log.warning("jetstream.unavailable", error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _report_lag(self) -> None:
        while True:
            for stage in self.stages:
                c = stage.consumer
                with contextlib.suppress(Exception):
                    info = await self.js.consumer_info(c.stream.name, c.durable)
                    lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    metrics.QUEUE_LAG.labels(c.stream.name, c.durable).set(lag)
            await asyncio.sleep(5)


async def _log_nats_error(exc: Exception) -> None:
    log.warning("nats.error", error=str(exc))


async def _log_disconnected() -> None:
    log.warning("nats.disconnected")


async def _log_reconnected() -> None:
    log.info("nats.reconnected")


def run_service(name: str, settings: CommonSettings, create: Callable[[], ServiceApp]) -> None:
    """Entry point body shared by every service's `__main__`."""
    configure_logging(name, settings.log_level, settings.log_format)
    configure_tracing(name, settings.otlp_endpoint)

    async def main() -> None:
        await create().run()

    uvloop.run(main())  # cheaper socket I/O than asyncio's default loop on every hot path
