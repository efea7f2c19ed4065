"""The two forms of the router a caller holds, behind one interface.

`InProcess` runs the router in the caller's own process (the gateway, for
hosted upstreams: one Python hop fewer); `Remote` calls the inference service
over gRPC (the router's remote form, next to Triton on GPU nodes). Both
stream GenerateResponses and fail with RouteError carrying the gRPC status, so
a caller, and the tests, cannot tell them apart. `Split` picks one per alias
by LLMOPS_ROUTING (docs/chat.md#where-routing-runs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Sequence
from enum import StrEnum
from typing import Protocol

import grpc

from llmops.routing.errors import RouteError
from llmops.routing.router import Router
from llmops.v1 import inference_pb2, inference_pb2_grpc

Metadata = Sequence[tuple[str, str]]


class Inference(Protocol):
    def generate(
        self, request: inference_pb2.GenerateRequest, timeout_s: float, metadata: Metadata = ()
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        """Deltas, then the Final; RouteError when it fails. Closing it early stops the
        upstream work."""
        ...

    async def list_models(self, timeout_s: float) -> inference_pb2.ListModelsResponse: ...


class InProcess:
    """The router, called directly; `timeout_s` bounds the whole answer as a gRPC deadline
    would."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def generate(
        self, request: inference_pb2.GenerateRequest, timeout_s: float, metadata: Metadata = ()
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        stream = self.router.generate(request)
        async with contextlib.aclosing(stream):
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        response = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise RouteError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, "the answer did not end in time"
                    ) from None
                yield response

    async def list_models(self, timeout_s: float) -> inference_pb2.ListModelsResponse:
        return self.router.list_models()


class Remote:
    """The inference service over gRPC; its status becomes the RouteError's."""

    def __init__(self, stub: Callable[[], inference_pb2_grpc.InferenceStub]) -> None:
        self._stub = stub

    async def generate(
        self, request: inference_pb2.GenerateRequest, timeout_s: float, metadata: Metadata = ()
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        call = self._stub().Generate(request, timeout=timeout_s, metadata=tuple(metadata))
        finished = False
        try:
            while True:
                try:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise RouteError(
                            grpc.StatusCode.UNAVAILABLE, "the stream ended without a final"
                        )
                    if response.HasField("final"):
                        # Read the status too: the call ends OK instead of being cancelled.
                        finished = await call.read() is grpc.aio.EOF
                except grpc.aio.AioRpcError as exc:
                    raise RouteError(exc.code(), exc.details() or "") from None
                yield response
                if finished:
                    return
        finally:
            if not finished:
                call.cancel()  # the caller is cancelled or failed: stop the upstream work

    async def list_models(self, timeout_s: float) -> inference_pb2.ListModelsResponse:
        try:
            listed: inference_pb2.ListModelsResponse = await self._stub().ListModels(
                inference_pb2.ListModelsRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise RouteError(exc.code(), exc.details() or "") from None
        return listed


class Mode(StrEnum):
    """Where a caller that has both forms sends an alias (LLMOPS_ROUTING)."""

    AUTO = "auto"  # in-process when every target of the alias is hosted (openai), else remote
    REMOTE = "remote"  # every alias to the inference service
    LOCAL = "local"  # every alias in-process, Triton targets included (one-node setups)


class Split:
    """In-process for the aliases `mode` keeps here, the inference service for the rest; the
    alias list is the same routes file's either way. (Mode.REMOTE needs no Split: `Remote`.)"""

    def __init__(self, mode: Mode, local: InProcess, remote: Remote) -> None:
        routes = local.router.routes
        self.local_aliases = frozenset(
            alias
            for alias, targets in routes.aliases.items()
            if mode is Mode.LOCAL or all(t.provider == "openai" for t in targets)
        )
        self._default = routes.default
        self._local = local
        self._remote = remote

    def generate(
        self, request: inference_pb2.GenerateRequest, timeout_s: float, metadata: Metadata = ()
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        form: Inference = self._local
        if (request.model or self._default) not in self.local_aliases:
            form = self._remote
        return form.generate(request, timeout_s, metadata)

    async def list_models(self, timeout_s: float) -> inference_pb2.ListModelsResponse:
        return await self._local.list_models(timeout_s)
