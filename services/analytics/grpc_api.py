"""gRPC `llmops.v1.Analytics`: read-only SQL, scoped by the caller's API key."""

from __future__ import annotations

import asyncio

import grpc

from analytics.settings import AnalyticsSettings
from analytics.sql import Limits, QueryError, SqlRunner
from llmops import metrics
from llmops.apikeys import KeyDirectory, KeyRecord
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import analytics_pb2, analytics_pb2_grpc

log = get_logger(__name__)


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServicer):
    def __init__(
        self, settings: AnalyticsSettings, keys: KeyDirectory, runner: Loaded[SqlRunner]
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._runner = runner

    async def Query(
        self, request: analytics_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> analytics_pb2.QueryReply:
        key_id = ""
        try:
            record = self._authenticate(context)
            key_id = record.key_id
            tenant = None if record.analytics_scope == "all" else record.tenant
            reply = await asyncio.to_thread(
                self._runner.value.run,
                request.sql,
                request.parameters,
                self._limits(request, context),
                tenant,
            )
        except QueryError as exc:
            metrics.ANALYTICS_QUERIES.labels(exc.code.name).inc()
            log.info("analytics.query_refused", key_id=key_id, code=exc.code.name)
            await context.abort(exc.code, exc.message)
        metrics.ANALYTICS_QUERIES.labels("OK").inc()
        log.info(
            "analytics.query",
            key_id=key_id,
            tenant=tenant or "*",
            rows=len(reply.rows),
            ms=round(reply.elapsed_ms, 1),
        )
        return reply

    def _authenticate(self, context: grpc.aio.ServicerContext) -> KeyRecord:
        record = self._keys.authenticate_call(context.invocation_metadata())
        if record is None:
            raise QueryError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send metadata 'authorization: Bearer <key>'",
            )
        return record

    def _limits(
        self, request: analytics_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> Limits:
        """The server's limits, or tighter ones the caller asked for (never looser)."""
        s = self._settings
        timeout = s.analytics_query_timeout_s
        if request.timeout_s > 0:
            timeout = min(timeout, request.timeout_s)
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        max_rows = s.analytics_max_rows
        if request.max_rows > 0:
            max_rows = min(max_rows, request.max_rows)
        return Limits(max_rows=max_rows, timeout_s=timeout)
