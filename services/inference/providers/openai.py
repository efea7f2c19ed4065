"""Stream from an OpenAI-compatible chat-completions API (hosted APIs, vLLM, TGI).

`POST {base_url}/chat/completions` with `stream: true` and
`stream_options: {include_usage: true}`. The messages are the request's
`messages` (the rendered prompt template) when it has any, else a system
message that tells the model to answer only from the numbered context
passages and to cite them as [n], then the user message with the passages and
the question. `params` become `max_tokens`, `temperature`, `top_p`, `stop`
and `seed` (each only when set). The answer comes back as server-sent events,
one `data: {json}` line per chunk (the piece is `choices[0].delta.content`),
ended by `data: [DONE]`; the last chunk before it carries `usage`
(`prompt_tokens`, `completion_tokens`), which becomes the Done's usage. An
upstream that sends none leaves it unset: the router then counts with the
target's `tokenizer`, if any, else reports 0 and logs it.

A generative upstream cites nothing structured: its citations, if any, are
`[n]` markers inside the text, so the final Done always carries no citations.

`timeout_s` bounds the time to the first piece (connecting and the response
headers included) and the gap between two pieces; an upstream that is
unreachable, answers with an HTTP error, or is too slow fails the target
(TargetError) so the next target is tried. The API key is read per request
from the environment variable the target names (`api_key_env`).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import httpx

from inference.errors import TargetError
from inference.prompting import conversation
from inference.providers import Done, Event, Text, Usage
from inference.routing import Target
from llmops.v1 import inference_pb2

_DONE = "[DONE]"
_MAX_ERROR_CHARS = 500


class OpenAIProvider:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        # One pooled client for the process, made lazily inside the running loop.
        if self._http is None:
            self._http = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20)
            )
        return self._http

    async def generate(
        self, target: Target, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[Event, None]:
        assert target.base_url is not None  # routing.Target requires it for openai
        url = target.base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if target.api_key_env:
            key = self._environ.get(target.api_key_env)
            if not key:
                raise TargetError(f"the environment variable {target.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        client = self._client()
        http_request = client.build_request(
            "POST",
            url,
            json=chat_request(target.model, request),
            headers=headers,
            timeout=httpx.Timeout(target.timeout_s),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + target.timeout_s  # the first piece, then each next one
        try:
            response = await asyncio.wait_for(
                client.send(http_request, stream=True), target.timeout_s
            )
        except (TimeoutError, httpx.TimeoutException):
            raise TargetError(f"no response from {url} within {target.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise TargetError(f"{url}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code >= 400:
                raise TargetError(
                    f"{url}: HTTP {response.status_code}: {await _error_text(response, target)}"
                )
            events = sse_data(response.aiter_lines())
            usage: Usage | None = None
            while True:
                try:
                    data = await asyncio.wait_for(anext(events), max(deadline - loop.time(), 0.0))
                except (TimeoutError, httpx.TimeoutException):
                    raise TargetError(f"no piece from {url} within {target.timeout_s:g}s") from None
                except StopAsyncIteration:
                    raise TargetError(f"{url} ended the stream before [DONE]") from None
                except httpx.HTTPError as exc:
                    raise TargetError(f"{url}: {type(exc).__name__}: {exc}") from None
                if data == _DONE:
                    yield Done((), usage)
                    return
                text, reported = parse_chunk(data)
                usage = reported or usage
                if text:
                    yield Text(text)
                    deadline = loop.time() + target.timeout_s
        finally:
            await response.aclose()  # the caller went away, or the answer is complete

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


def chat_request(model: str, request: inference_pb2.GenerateRequest) -> dict[str, Any]:
    """The chat-completions body: the conversation (inference.prompting) and the params set."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": role, "content": content} for role, content in conversation(request)],
    }
    params = request.params
    if params.max_tokens > 0:
        body["max_tokens"] = params.max_tokens
    if params.HasField("temperature"):
        body["temperature"] = params.temperature
    if params.HasField("top_p"):
        body["top_p"] = params.top_p
    if params.stop:
        body["stop"] = list(params.stop)
    if params.HasField("seed"):
        body["seed"] = params.seed
    return body


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The data of each server-sent event (its `data:` lines joined by newlines).

    Per the SSE format: a blank line ends an event, `:` lines are comments, one
    space after the colon is dropped, other fields (`event`, `id`, `retry`) are ignored.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:  # a last event without its blank line
        yield "\n".join(data)


def delta_text(data: str) -> str:
    """`choices[0].delta.content` of a chunk ("" when it has none); TargetError on an error."""
    return parse_chunk(data)[0]


def parse_chunk(data: str) -> tuple[str, Usage | None]:
    """A chunk's text (`choices[0].delta.content`, "" when none) and its `usage`, if any."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise TargetError(f"the upstream sent an event that is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise TargetError(f"the upstream sent an unexpected event: {data[:200]!r}")
    if "error" in chunk:  # vLLM and others report errors inside the stream
        raise TargetError(f"the upstream reported an error: {_message(chunk)}")
    usage = _usage(chunk.get("usage"))
    choices = chunk.get("choices") or []  # a usage-only chunk has none
    if not choices or not isinstance(choices[0], dict):
        return "", usage
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), usage


def _usage(value: Any) -> Usage | None:
    """OpenAI's `usage` object (`prompt_tokens`, `completion_tokens`); None if absent or odd."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


async def _error_text(response: httpx.Response, target: Target) -> str:
    """The upstream's error message (OpenAI's `{"error": {"message": ...}}`, or the body)."""
    try:
        body = await asyncio.wait_for(response.aread(), target.timeout_s)
    except (TimeoutError, httpx.HTTPError):
        return response.reason_phrase
    text = body.decode("utf-8", errors="replace")
    try:
        return _message(json.loads(text))
    except json.JSONDecodeError:
        return text.strip()[:_MAX_ERROR_CHARS] or response.reason_phrase


def _message(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_MAX_ERROR_CHARS]
    if isinstance(error, str):
        return error[:_MAX_ERROR_CHARS]
    return json.dumps(payload)[:_MAX_ERROR_CHARS]
