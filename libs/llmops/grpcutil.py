"""gRPC servers and channels with health checking, reflection, metrics and trace context.

Every service builds its server with `create_server`, so each one answers the
standard `grpc.health.v1.Health` (used by `llmops status`, Kubernetes probes)
and server reflection (grpcurl), records `llmops_grpc_*` metrics and continues
the caller's W3C trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmops import metrics, tracing

S = TypeVar("S")
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


def _options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # Calls stay inside the cluster / on 127.0.0.1: never route them through an HTTP proxy.
        ("grpc.enable_http_proxy", 0),
    ]


# A server closes each connection after a minute (streams in flight get 5 more), so
# clients reconnect and spread over the replicas behind one ClusterIP instead of
# keeping to the pod they met first (docs/deploy.md#grpc-connections).
_SERVER_CONNECTION_AGE = [
    ("grpc.max_connection_age_ms", 60_000),
    ("grpc.max_connection_age_grace_ms", 300_000),
]
# Clients spread calls over every address they know (the replicas of a local cluster,
# the records of a headless Service) that reports SERVING on grpc.health.v1 (a replica
# loading, draining or standing by gets none). gRPC's transparent retry resends a call a
# stopping server refused unprocessed; no retry policy on UNAVAILABLE: services answer
# UNAVAILABLE themselves after their own fallbacks, and a retry would repeat all of it.
_CLIENT_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)
_OPTIONS = [*_options(), ("grpc.service_config", _CLIENT_SERVICE_CONFIG)]


def target(address: str) -> str:
    """A gRPC target for an address-book entry: `host:port`, or the replicas of a local
    cluster as `ip:port,ip:port` (gRPC's static `ipv4:` resolver)."""
    return f"ipv4:{address}" if "," in address else address


class _TelemetryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Times unary and server-streaming calls, counts them by status code, and continues
    the caller's trace (unary calls; a span is not held open across a stream's yields)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith("/grpc."):  # health, reflection: no metric
            return handler
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _observed(method, context, trace=True):
                    return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streaming = handler.unary_stream

            async def stream_behavior(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                with _observed(method, context, trace=False):
                    async for response in streaming(request, context):
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                stream_behavior,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


@contextlib.contextmanager
def _observed(method: str, context: grpc.aio.ServicerContext, trace: bool) -> Iterator[None]:
    started = time.perf_counter()
    failure: BaseException | None = None
    try:
        if trace:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            with tracing.span(method, parent=metadata):
                yield
        else:
            yield
    except BaseException as exc:
        failure = exc
        raise
    finally:
        metrics.GRPC_REQUESTS.labels(method, _code_name(context, failure)).inc()
        metrics.GRPC_LATENCY.labels(method).observe(time.perf_counter() - started)


def _code_name(context: grpc.aio.ServicerContext, failure: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if failure is None:
        return "OK"
    return "CANCELLED" if isinstance(failure, asyncio.CancelledError) else "UNKNOWN"


Registrar = Callable[[grpc.aio.Server], None]

# Health service names: "" (and each gRPC service) answer readiness, SERVING only
# once the service loaded what it needs; LIVENESS answers SERVING while the
# process runs, so a Kubernetes liveness probe never kills a pod that is only
# loading or draining.
LIVENESS = "liveness"


class GrpcServer:
    """A grpc.aio server plus its health servicer, so a service can report NOT_SERVING."""

    def __init__(
        self,
        address: str,
        service_names: Iterable[str],
        registrars: Iterable[Registrar],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ):
        """`max_message_bytes` bounds requests and replies (ingestion's takes whole documents)."""
        self.address = address
        self.server = grpc.aio.server(
            interceptors=[_TelemetryInterceptor()],
            options=[*_options(max_message_bytes), *_SERVER_CONNECTION_AGE],
        )
        self.health = health.aio.HealthServicer()
        self.service_names = list(service_names)
        for register in registrars:
            register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC server to {address}")

    async def start(self) -> None:
        await self.server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


def channel(address: str) -> grpc.aio.Channel:
    """An async channel to another service; the caller's trace context rides in the metadata."""
    return grpc.aio.insecure_channel(
        target(address), options=_OPTIONS, interceptors=[_TraceClientInterceptor()]
    )


class _TraceClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        headers = tracing.inject()
        if headers:
            metadata = list(details.metadata or []) + list(headers.items())
            details = grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            )
        return await continuation(details, request)


async def check_health(address: str, timeout_s: float = 1.0, service: str = "") -> bool:
    """True when the server at `address` reports `service` (default: readiness) SERVING."""
    # Not _OPTIONS: client-side health checking would refuse to ask a server not SERVING.
    async with grpc.aio.insecure_channel(target(address), options=_options()) as ch:
        try:
            reply = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def lazy_stub(make: Callable[[grpc.aio.Channel], S], address: str) -> Callable[[], S]:
    """A getter for a stub on one channel per process, made on first use inside the loop."""
    made: list[S] = []

    def get() -> S:
        if not made:
            made.append(make(channel(address)))
        return made[0]

    return get
