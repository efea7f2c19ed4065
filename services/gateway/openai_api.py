"""The OpenAI-compatible HTTP API: /v1/chat/completions, /v1/embeddings, /v1/models.

Same keys, limits, pipeline and events as gRPC; the official `openai` SDK
works unchanged with `base_url` pointed here. RAG and prompt selection ride in
one extra body field, `llmops` (`extra_body={"llmops": {...}}` in the SDK):
collection, filters, prompt, prompt_version, prompt_label, variables,
retrieval {disabled, top_k, mode}, cache {no_exact, no_semantic}, guardrail_policy
(the body's standard `user` keeps an A/B arm sticky). Replies carry the same extras under
`llmops` (citations, cache status, trace id, overhead) and the headers
`x-llmops-overhead-ms`, `x-llmops-trace-id` and `x-llmops-cache`; a stream
carries them in its last chunk. POST /v1/feedback judges an answer (thumbs or a score).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.json_format import MessageToDict

from gateway.embeddings import EmbeddingsFlow
from gateway.errors import GatewayError
from gateway.feedback import FeedbackDesk
from gateway.grpc_api import OVERHEAD_HEADER
from gateway.pipeline import Call, ChatPipeline, coalesced
from gateway.ratelimit import quotas_of
from gateway.settings import GatewaySettings
from llmops.apikeys import KeyDirectory, KeyRecord, bearer_key
from llmops.pricebook import amount
from llmops.routing.client import Inference
from llmops.routing.errors import RouteError
from llmops.tracing import TRACEPARENT
from llmops.v1 import gateway_pb2, inference_pb2

_CACHE_NAMES = {
    gateway_pb2.CACHE_STATUS_UNSPECIFIED: "",
    gateway_pb2.CACHE_STATUS_MISS: "miss",
    gateway_pb2.CACHE_STATUS_EXACT_HIT: "exact_hit",
    gateway_pb2.CACHE_STATUS_SEMANTIC_HIT: "semantic_hit",
    gateway_pb2.CACHE_STATUS_BYPASS: "bypass",
}
_MODES = {
    "": gateway_pb2.SEARCH_MODE_OPTION_UNSPECIFIED,
    "hybrid": gateway_pb2.SEARCH_MODE_OPTION_HYBRID,
    "dense": gateway_pb2.SEARCH_MODE_OPTION_DENSE,
    "sparse": gateway_pb2.SEARCH_MODE_OPTION_SPARSE,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_http_app(
    settings: GatewaySettings,
    keys: KeyDirectory,
    pipeline: ChatPipeline,
    embeddings: EmbeddingsFlow,
    inference: Callable[[], Inference],
    feedback: FeedbackDesk,
) -> web.Application:
    api = OpenAIApi(settings, keys, pipeline, embeddings, inference, feedback)
    app = web.Application(client_max_size=settings.max_request_bytes)
    app.router.add_post("/v1/chat/completions", api.chat_completions)
    app.router.add_post("/v1/embeddings", api.embeddings)
    app.router.add_get("/v1/models", api.models)
    app.router.add_post("/v1/feedback", api.feedback)
    return app


class OpenAIApi:
    def __init__(
        self,
        settings: GatewaySettings,
        keys: KeyDirectory,
        pipeline: ChatPipeline,
        embeddings: EmbeddingsFlow,
        inference: Callable[[], Inference],
        feedback: FeedbackDesk,
    ) -> None:
        self._feedback = feedback
        self._settings = settings
        self._keys = keys
        self._pipeline = pipeline
        self._embeddings = embeddings
        self._inference = inference

    def _key(self, request: web.Request) -> KeyRecord:
        record = self._keys.authenticate(bearer_key(request.headers.get("Authorization")))
        if record is None:
            raise GatewayError(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown API key: send 'Authorization: Bearer <key>'",
            )
        return record

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            record = self._key(request)
            body = await _json_body(request, self._settings.max_request_bytes)
            chat = chat_request(body)
            stream = body.get("stream") is True
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            trace = request.headers.get(TRACEPARENT)
            call = Call(
                request=chat,
                key=record,
                tenant=self._keys.tenant(record.tenant),
                api="openai.chat",
                streamed=stream,
                timeout_s=self._settings.request_timeout_s,
                trace_headers={TRACEPARENT: trace} if trace else {},
            )
            responses = self._pipeline.run(call)
            # Pull the first response before answering, so early failures get their status.
            first = await anext(responses)
        except GatewayError as exc:
            return _error(exc)
        requested = chat.model
        if stream:
            return await self._stream(
                request, first, responses, call.request_id, requested, include_usage
            )
        pieces: list[str] = []
        final = gateway_pb2.ChatFinal()
        try:
            async for response in _chain(first, responses):
                if response.HasField("final"):
                    final = response.final
                else:
                    pieces.append(response.delta.text)
        except GatewayError as exc:
            return _error(exc)
        completion = {
            "id": f"chatcmpl-{final.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": final.model_used or requested,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(final),
            "llmops": _extras(final),
        }
        return web.json_response(completion, headers=_headers(final), dumps=_dumps)

    async def _stream(
        self,
        request: web.Request,
        first: gateway_pb2.ChatResponse,
        responses: AsyncIterator[gateway_pb2.ChatResponse],
        request_id: str,
        requested: str,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        created = int(time.time())
        chunk_id = f"chatcmpl-{request_id}"
        model = requested

        def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
            """A chunk; delta None: the usage chunk that closes a stream, with no choices."""
            choices = (
                [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            )
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
            }

        await response.write(_event(chunk({"role": "assistant", "content": ""})))
        try:
            async for item in coalesced(_chain(first, responses)):
                if item.HasField("final"):
                    final = item.final
                    model = final.model_used or requested
                    last = chunk({}, "stop")
                    if include_usage:
                        await response.write(_event(last))
                        last = chunk(None)
                        last["usage"] = _usage(final)
                    last["llmops"] = _extras(final)
                    await response.write(_event(last))
                else:
                    await response.write(_event(chunk({"content": item.delta.text})))
        except GatewayError as exc:
            # Headers are gone: the error travels as an SSE event, as OpenAI's API does.
            await response.write(_event(_error_body(exc)))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            record = self._key(request)
            body = await _json_body(request, self._settings.max_request_bytes)
            texts = _inputs(body.get("input"))
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise _invalid(f"encoding_format must be 'float' or 'base64', not {encoding!r}")
            result = await self._embeddings.embed(
                quotas_of(record, self._keys.tenant(record.tenant)),
                record,
                texts,
                encoding,
                self._settings.request_timeout_s,
            )
        except GatewayError as exc:
            return _error(exc)
        return web.json_response(result, dumps=_dumps)

    async def feedback(self, request: web.Request) -> web.StreamResponse:
        try:
            record = self._key(request)
            body = await _json_body(request, self._settings.max_request_bytes)
            reply = await self._feedback.give(
                record, request.headers.get("Authorization", ""), feedback_request(body)
            )
        except GatewayError as exc:
            return _error(exc)
        return web.json_response(
            {"id": reply.event_id, "object": "feedback", "request_id": reply.request_id},
            dumps=_dumps,
        )

    async def models(self, request: web.Request) -> web.StreamResponse:
        try:
            self._key(request)
            try:
                listed = await self._inference().list_models(timeout_s=5.0)
            except RouteError as exc:
                raise GatewayError(
                    grpc.StatusCode.UNAVAILABLE, f"inference: {exc.code.name}: {exc.details}"
                ) from None
        except GatewayError as exc:
            return _error(exc)
        data = [
            {"id": alias.name, "object": "model", "created": 0, "owned_by": "llmops"}
            for alias in listed.aliases
        ]
        return web.json_response({"object": "list", "data": data}, dumps=_dumps)


def chat_request(body: dict[str, Any]) -> gateway_pb2.ChatRequest:
    """The ChatRequest an OpenAI chat-completions body asks for (GatewayError if malformed)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty list")
    if body.get("n") not in (None, 1):
        raise _invalid("only n=1 is supported")
    chat = gateway_pb2.ChatRequest(model=_str(body, "model"))
    for message in messages:
        if not isinstance(message, dict):
            raise _invalid("each message must be an object with role and content")
        chat.messages.append(
            inference_pb2.ChatMessage(
                role=str(message.get("role", "")), content=_content(message.get("content"))
            )
        )
    params = chat.params
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params.max_tokens = _int(max_tokens, "max_tokens")
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            setattr(params, name, _float(body[name], name))
    if body.get("seed") is not None:
        params.seed = _int(body["seed"], "seed")
    stop = body.get("stop")
    if stop is not None:
        params.stop.extend([stop] if isinstance(stop, str) else [str(s) for s in stop])
    extras = body.get("llmops") or {}
    if not isinstance(extras, dict):
        raise _invalid("llmops must be an object")
    chat.collection = _str(extras, "collection")
    chat.prompt = _str(extras, "prompt")
    chat.prompt_version = _str(extras, "prompt_version")
    chat.prompt_label = _str(extras, "prompt_label")
    chat.user = _str(body, "user")
    variables = extras.get("variables") or {}
    if not isinstance(variables, dict):
        raise _invalid("llmops.variables must be an object of strings")
    chat.variables.update({str(k): str(v) for k, v in variables.items()})
    chat.guardrail_policy = _str(extras, "guardrail_policy")
    filters = extras.get("filters") or {}
    if not isinstance(filters, dict):
        raise _invalid("llmops.filters must be an object of strings")
    chat.filters.update({str(k): str(v) for k, v in filters.items()})
    retrieval = extras.get("retrieval") or {}
    chat.retrieval.disabled = bool(retrieval.get("disabled", False))
    chat.retrieval.top_k = _int(retrieval.get("top_k", 0), "llmops.retrieval.top_k")
    mode = str(retrieval.get("mode", ""))
    if mode not in _MODES:
        raise _invalid(f"llmops.retrieval.mode must be one of {sorted(m for m in _MODES if m)}")
    chat.retrieval.mode = _MODES[mode]
    cache = extras.get("cache") or {}
    chat.cache.no_exact = bool(cache.get("no_exact", False))
    chat.cache.no_semantic = bool(cache.get("no_semantic", False))
    return chat


_THUMBS = {"up": gateway_pb2.THUMBS_UP, "down": gateway_pb2.THUMBS_DOWN}


def feedback_request(body: dict[str, Any]) -> gateway_pb2.FeedbackRequest:
    """The FeedbackRequest of a /v1/feedback body (GatewayError if malformed)."""
    thumbs = body.get("thumbs")
    if thumbs is not None and thumbs not in _THUMBS:
        raise _invalid("thumbs must be 'up' or 'down'")
    feedback = gateway_pb2.FeedbackRequest(
        request_id=_str(body, "request_id"),
        trace_id=_str(body, "trace_id"),
        thumbs=_THUMBS.get(thumbs or "", gateway_pb2.THUMBS_UNSPECIFIED),
        label=_str(body, "label"),
        comment=_str(body, "comment"),
        source=_str(body, "source"),
        user=_str(body, "user"),
    )
    if body.get("score") is not None:
        feedback.score = _float(body["score"], "score")
    return feedback


async def _chain(
    first: gateway_pb2.ChatResponse, rest: AsyncIterator[gateway_pb2.ChatResponse]
) -> AsyncIterator[gateway_pb2.ChatResponse]:
    yield first
    async for response in rest:
        yield response


async def _json_body(request: web.Request, max_bytes: int) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except web.HTTPRequestEntityTooLarge:
        raise _invalid(
            f"the request body is larger than {max_bytes} bytes (LLMOPS_MAX_REQUEST_BYTES)"
        ) from None
    except ValueError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    return body


def _content(content: Any) -> str:
    """A message's text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        if len(texts) == len(content):
            return "".join(texts)
        raise _invalid("only text content parts are supported")
    if content is None:
        return ""
    raise _invalid("message content must be a string or a list of text parts")


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _invalid("input must be a string or a non-empty list of strings")
    if not all(v.strip() for v in value):
        raise _invalid("input strings must not be empty")
    return value


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    return value


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"{name} must be a non-negative integer")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"{name} must be a number")
    return float(value)


def _invalid(message: str) -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _usage(final: gateway_pb2.ChatFinal) -> dict[str, Any]:
    """OpenAI's usage block, with the token details and the request's cost (`cost`, in the
    currency's units, as OpenRouter reports it; null when the model has no price)."""
    usage, cost = final.usage, final.cost
    prompt, completion = usage.input_tokens, usage.output_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "cost": amount(cost),
        "cost_details": {
            "nanos": cost.nanos,
            "currency": cost.currency,
            "priced": cost.priced,
            "price_version": cost.price_version,
        },
    }


def _extras(final: gateway_pb2.ChatFinal) -> dict[str, Any]:
    return {
        "citations": [MessageToDict(c, preserving_proto_field_name=True) for c in final.citations],
        "cache": _CACHE_NAMES.get(final.cache, ""),
        "trace_id": final.trace_id,
        "request_id": final.request_id,
        "prompt": final.prompt,
        "prompt_version": final.prompt_version,
        "prompt_label": final.prompt_label,
        "prompt_arm": final.prompt_arm,
        "time_to_first_token_ms": final.time_to_first_token_ms,
        "overhead_ms": final.overhead_ms,
        "steps": {s.step: s.ms for s in final.steps},
        "guardrails": MessageToDict(final.guardrails, preserving_proto_field_name=True),
    }


def _headers(final: gateway_pb2.ChatFinal) -> dict[str, str]:
    return {
        OVERHEAD_HEADER: f"{final.overhead_ms:.3f}",
        "x-llmops-trace-id": final.trace_id,
        "x-llmops-cache": _CACHE_NAMES.get(final.cache, ""),
    }


def _error_body(exc: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": exc.message,
            "type": exc.openai_type,
            "code": exc.code.name.lower(),
            "param": None,
        }
    }


def _error(exc: GatewayError) -> web.Response:
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return web.json_response(
        _error_body(exc), status=exc.http_status, headers=headers, dumps=_dumps
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _event(body: dict[str, Any]) -> bytes:
    return f"data: {_dumps(body)}\n\n".encode()
