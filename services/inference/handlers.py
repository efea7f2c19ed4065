"""gRPC `Generate`: resolve the alias, try its targets in order, stream the first that answers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping

import grpc

from inference.errors import TargetError
from inference.providers import Done, Provider
from inference.routing import Routes
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import inference_pb2, inference_pb2_grpc

log = get_logger(__name__)
STAGE = "inference"
DEFAULT = "default"


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, routes: Loaded[Routes], providers: Mapping[str, Provider]) -> None:
        self._routes = routes
        self._providers = providers

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        started = time.perf_counter()
        if not request.prompt.strip():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty")
        if request.max_sentences < 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "max_sentences must be 0 (the model's default) or more, "
                f"got {request.max_sentences}",
            )
        routes = self._routes.value
        alias = request.model or routes.default
        targets = routes.targets(alias)
        if targets is None:
            known = ", ".join(sorted(routes.aliases))
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"unknown model alias {alias!r}; known aliases: {known}"
            )
            return
        tenant = request.tenant or DEFAULT
        failures: list[str] = []
        for target in targets:
            pieces = 0
            first_ms = 0.0
            try:
                provider = self._providers[target.provider]
                # aclosing: a client that cancels closes the provider's stream upstream too.
                async with contextlib.aclosing(provider.generate(target, request)) as stream:
                    async for event in stream:
                        if isinstance(event, Done):
                            yield inference_pb2.GenerateResponse(
                                final=inference_pb2.Final(
                                    citations=list(event.citations),
                                    model_used=target.name,
                                    output_pieces=pieces,
                                    time_to_first_token_ms=first_ms,
                                )
                            )
                            log.info(
                                "generate.done",
                                alias=alias,
                                target=target.name,
                                tenant=tenant,
                                request_id=request.request_id,
                                pieces=pieces,
                                ttft_ms=round(first_ms, 1),
                                ms=round((time.perf_counter() - started) * 1000, 1),
                                skipped=len(failures),
                            )
                            return
                        if pieces == 0:
                            first_ms = (time.perf_counter() - started) * 1000
                        pieces += 1
                        yield inference_pb2.GenerateResponse(
                            delta=inference_pb2.Delta(text=event.text)
                        )
            except TargetError as exc:
                log.warning(
                    "generate.target_failed",
                    alias=alias,
                    target=target.name,
                    request_id=request.request_id,
                    pieces=pieces,
                    error=str(exc),
                )
                if pieces:  # the client already has part of this target's answer
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"model alias {alias!r}: {target.name} failed after streaming "
                        f"{pieces} pieces: {exc}",
                    )
                failures.append(f"{target.name}: {exc}")
        await context.abort(
            grpc.StatusCode.UNAVAILABLE,
            f"no target of model alias {alias!r} answered: " + "; ".join(failures),
        )
