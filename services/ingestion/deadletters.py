"""gRPC `DeadLetters`: list, read and replay dead letters (llmops.deadletters does the work).

Served by ingestion because it is where documents come in and where most letters
are made; every stage's letters are served, as they share LLMOPS_DLQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
import nats.errors
from nats.js import JetStreamContext

from llmops import deadletters
from llmops.logging import get_logger
from llmops.v1 import deadletters_pb2, deadletters_pb2_grpc

log = get_logger(__name__)
T = TypeVar("T")


async def _answer(context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
    """The library's refusals and NATS failures as gRPC statuses, here at the edge."""
    try:
        return await work
    except deadletters.InvalidRequest as exc:
        code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    except deadletters.LetterNotFound as exc:
        code, message = grpc.StatusCode.NOT_FOUND, str(exc)
    except (nats.errors.Error, TimeoutError) as exc:
        log.error("deadletters.nats_failed", error=str(exc))
        code, message = grpc.StatusCode.UNAVAILABLE, f"cannot reach NATS: {exc}"
    await context.abort(code, message)
    raise AssertionError("abort raises")  # grpc's abort always raises; this tells mypy


class DeadLettersServicer(deadletters_pb2_grpc.DeadLettersServicer):
    def __init__(self, js: Callable[[], JetStreamContext]) -> None:
        self._js = js

    async def ListDeadLetters(
        self, request: deadletters_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> deadletters_pb2.ListDeadLettersResponse:
        return await _answer(context, deadletters.list_letters(self._js(), request))

    async def GetDeadLetter(
        self, request: deadletters_pb2.GetDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> deadletters_pb2.DeadLetterEntry:
        return await _answer(context, deadletters.get_letter(self._js(), request.id))

    async def Replay(
        self, request: deadletters_pb2.ReplayRequest, context: grpc.aio.ServicerContext
    ) -> deadletters_pb2.ReplayResponse:
        outcome = await _answer(context, deadletters.replay(self._js(), request))
        log.info(
            "deadletters.replayed",
            replayed=list(outcome.replayed),
            refused={r.id: r.reason for r in outcome.refused},
        )
        return outcome
