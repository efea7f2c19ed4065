"""gRPC `llmops.v1.Gateway`: Chat (server streaming) and ChatOnce over the chat pipeline;
Feedback on answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.errors import GatewayError
from gateway.feedback import FeedbackDesk
from gateway.pipeline import Call, ChatPipeline, coalesced
from gateway.settings import GatewaySettings
from llmops.apikeys import KeyDirectory, KeyRecord, bearer_key
from llmops.tracing import TRACEPARENT
from llmops.v1 import gateway_pb2, gateway_pb2_grpc

OVERHEAD_HEADER = "x-llmops-overhead-ms"
RETRY_AFTER = "retry-after-s"


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        settings: GatewaySettings,
        keys: KeyDirectory,
        pipeline: ChatPipeline,
        feedback: FeedbackDesk,
    ) -> None:
        self._feedback = feedback
        self._settings = settings
        self._keys = keys
        self._pipeline = pipeline

    def _call(
        self,
        request: gateway_pb2.ChatRequest,
        context: grpc.aio.ServicerContext,
        api: str,
        streamed: bool,
    ) -> Call:
        metadata = _metadata(context)
        record = self._authenticate(metadata)
        remaining = context.time_remaining()
        timeout = self._settings.request_timeout_s if remaining is None else remaining
        trace = {TRACEPARENT: metadata[TRACEPARENT]} if TRACEPARENT in metadata else {}
        return Call(
            request=request,
            key=record,
            tenant=self._keys.tenant(record.tenant),
            api=api,
            streamed=streamed,
            timeout_s=timeout,
            trace_headers=trace,
        )

    def _authenticate(self, metadata: dict[str, str]) -> KeyRecord:
        record = self._keys.authenticate(bearer_key(metadata.get("authorization")))
        if record is None:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send metadata 'authorization: Bearer <key>'",
            )
        return record

    async def Feedback(
        self, request: gateway_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.FeedbackReply:
        try:
            metadata = _metadata(context)
            record = self._authenticate(metadata)
            return await self._feedback.give(record, metadata["authorization"], request)
        except GatewayError as exc:
            await _abort(context, exc)
            raise AssertionError("abort raises") from None

    async def Chat(
        self, request: gateway_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.ChatResponse]:
        try:
            call = self._call(request, context, "grpc.chat", streamed=True)
            async for response in coalesced(self._pipeline.run(call)):
                if response.HasField("final"):
                    context.set_trailing_metadata(
                        ((OVERHEAD_HEADER, f"{response.final.overhead_ms:.3f}"),)
                    )
                yield response
        except GatewayError as exc:
            await _abort(context, exc)

    async def ChatOnce(
        self, request: gateway_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ChatReply:
        reply = gateway_pb2.ChatReply()
        try:
            call = self._call(request, context, "grpc.chat_once", streamed=False)
            pieces = []
            async for response in self._pipeline.run(call):
                if response.HasField("final"):
                    reply.final.CopyFrom(response.final)
                else:
                    pieces.append(response.delta.text)
            reply.text = "".join(pieces)
        except GatewayError as exc:
            await _abort(context, exc)
        context.set_trailing_metadata(((OVERHEAD_HEADER, f"{reply.final.overhead_ms:.3f}"),))
        return reply


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


async def _abort(context: grpc.aio.ServicerContext, exc: GatewayError) -> None:
    trailing: tuple[tuple[str, str], ...] = ()
    if exc.retry_after_s is not None:
        trailing = ((RETRY_AFTER, str(max(1, round(exc.retry_after_s)))),)
    await context.abort(exc.code, exc.message, trailing_metadata=trailing)
