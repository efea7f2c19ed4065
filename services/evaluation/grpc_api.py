"""`llmops.v1.Evaluation` over gRPC: drift checked on demand (`llmops eval drift`)."""

from __future__ import annotations

import grpc

from evaluation.drift_watch import DriftWatch
from llmops.apikeys import TENANT_RE
from llmops.v1 import evaluation_pb2, evaluation_pb2_grpc

DEFAULT_TENANT = "default"


class EvaluationServicer(evaluation_pb2_grpc.EvaluationServicer):
    def __init__(self, drift: DriftWatch) -> None:
        self._drift = drift

    async def CheckDrift(
        self, request: evaluation_pb2.CheckDriftRequest, context: grpc.aio.ServicerContext
    ) -> evaluation_pb2.CheckDriftReply:
        """Every signal of the tenant with enough data, tested now (after the start-up replay)."""
        tenant = request.tenant or DEFAULT_TENANT
        if not TENANT_RE.match(tenant):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not a tenant: {tenant!r}")
        outcome = await self._drift.check(tenant)
        if request.publish:
            await self._drift.publish(outcome.results)
        return evaluation_pb2.CheckDriftReply(results=outcome.results, skipped=outcome.skipped)
