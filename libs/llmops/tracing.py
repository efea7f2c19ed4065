"""W3C trace context through gRPC metadata and NATS headers; OTLP export when configured.

The SDK tracer always runs so every log line can carry a real trace_id; spans
are exported only when `LLMOPS_OTLP_ENDPOINT` is set.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_exporting = False  # whether spans leave the process (LLMOPS_OTLP_ENDPOINT)


def configure_tracing(service: str, otlp_endpoint: str | None) -> None:
    global _exporting  # noqa: PLW0603 - set once at start-up
    _exporting = bool(otlp_endpoint)
    provider = TracerProvider(resource=Resource.create({"service.name": f"llmops-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)


def inject() -> dict[str, str]:
    """Headers carrying the current trace context (for NATS headers or gRPC metadata)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def trace_id_of(traceparent: str) -> str:
    """The trace id inside a traceparent header, or '' if malformed."""
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


@contextmanager
def span(name: str, parent: Mapping[str, str] | None = None, **attributes: str) -> Iterator[str]:
    """Start a span (child of `parent` headers if any), bind its trace_id to the logs, yield it."""
    token = otel_context.attach(_PROPAGATOR.extract(dict(parent or {})))
    try:
        with trace.get_tracer("llmops").start_as_current_span(name, attributes=attributes):
            trace_id = current_trace_id()
            with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                yield trace_id
    finally:
        otel_context.detach(token)


def start_request_span(
    name: str, parent: Mapping[str, str] | None = None
) -> tuple[trace.Span, dict[str, str]]:
    """A span for a whole streamed request, and the headers that make calls its children.

    Unlike `span()` it attaches nothing to the current context, so it can stay
    open across an async generator's yields; the caller ends it. When nothing
    exports spans, a non-recording span with fresh ids (the caller's trace id
    if it sent one) is all a request needs: ids for replies, events and logs.
    """
    if not _exporting:
        ids = trace.SpanContext(
            trace_id=_parent_trace_id(parent) or random.getrandbits(128),
            span_id=random.getrandbits(64),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        traceparent = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-01"
        return trace.NonRecordingSpan(ids), {TRACEPARENT: traceparent}
    ctx = _PROPAGATOR.extract(dict(parent or {}))
    request_span = trace.get_tracer("llmops").start_span(name, context=ctx)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(request_span, ctx))
    return request_span, carrier


def _parent_trace_id(parent: Mapping[str, str] | None) -> int:
    """The trace id of the caller's traceparent, 0 when there is none or it is malformed."""
    try:
        return int(trace_id_of((parent or {}).get(TRACEPARENT, "")) or "0", 16)
    except ValueError:
        return 0


def trace_id_of_span(request_span: trace.Span) -> str:
    ctx = request_span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
