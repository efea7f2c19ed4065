"""Prometheus metrics every service exposes on `/metrics`.

One registry per process; names are shared so one dashboard covers all
services (the `service` label comes from the scrape target).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

GRPC_REQUESTS = Counter("llmops_grpc_requests_total", "gRPC requests served", ["method", "code"])
GRPC_LATENCY = Histogram(
    "llmops_grpc_request_seconds",
    "gRPC request latency",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STAGE_MESSAGES = Counter(
    "llmops_stage_messages_total", "messages settled by a pipeline stage", ["stage", "outcome"]
)
STAGE_BATCH_SECONDS = Histogram(
    "llmops_stage_batch_seconds",
    "time to handle one batch",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_LAG = Gauge(
    "llmops_queue_lag_messages", "messages waiting for a consumer", ["stream", "consumer"]
)
ERRORS = Counter("llmops_errors_total", "errors by kind", ["service", "kind"])
DOCUMENTS = Counter("llmops_documents_total", "document outcomes", ["stage", "status"])
CHUNKS = Counter("llmops_chunks_total", "chunks handled", ["stage"])
CHAT_REQUESTS = Counter(
    "llmops_chat_requests_total",
    "gateway requests by API, status and cache",
    ["api", "code", "cache"],
)
GATEWAY_OVERHEAD = Histogram(
    "llmops_gateway_overhead_seconds",
    "the gateway's own time per request: total minus waiting on upstreams",
    ["api"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
ANALYTICS_ROWS = Counter("llmops_analytics_rows_total", "events stored in ClickHouse", ["table"])
ANALYTICS_DUPLICATES = Counter(
    "llmops_analytics_duplicates_total",
    "redelivered events found stored already and not inserted again",
    ["table"],
)
ANALYTICS_QUERIES = Counter(
    "llmops_analytics_queries_total", "SQL queries answered, by outcome", ["code"]
)
TIME_TO_FIRST_TOKEN = Histogram(
    "llmops_time_to_first_token_seconds",
    "from request to the first answer piece, per model that answered",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
GUARDRAIL_CHECKS = Counter(
    "llmops_guardrail_checks_total",
    "guardrail checks by direction and the action taken",
    ["direction", "action"],
)
GUARDRAIL_SCANNER_SECONDS = Histogram(
    "llmops_guardrail_scanner_seconds",
    "one scanner's time on one text",
    ["scanner"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve `/metrics` on a background thread (prometheus_client's own server)."""
    start_http_server(port, addr=host)
