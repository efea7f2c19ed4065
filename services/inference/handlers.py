"""gRPC `Inference`: the router (llmops.routing) served to callers in other processes.

`Generate` streams what the router yields and ends with the router's status
(INVALID_ARGUMENT, NOT_FOUND for an unknown alias, UNAVAILABLE when no target
answered); `ListModels` gives the routes file's aliases, the default first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import grpc

from llmops.routing.errors import RouteError
from llmops.routing.router import Router
from llmops.v1 import inference_pb2, inference_pb2_grpc

STAGE = "inference"


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        return self._router.list_models()

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        # aclosing: a client that cancels closes the router's attempt, and so the upstream.
        try:
            async with contextlib.aclosing(self._router.generate(request)) as responses:
                async for response in responses:
                    yield response
        except RouteError as exc:
            await context.abort(exc.code, exc.details)
