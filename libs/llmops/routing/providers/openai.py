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

import aiohttp
from yarl import URL

from llmops.routing.errors import TargetError
from llmops.routing.prompting import conversation
from llmops.routing.providers import Done, Event, Text, Usage
from llmops.routing.routes import Target
from llmops.v1 import inference_pb2

_DONE = "[DONE]"
_MAX_ERROR_CHARS = 500
# After [DONE] the body should end at once (the chunked terminator): how long to wait
# for it before closing the connection instead of handing it back to the pool.
_DRAIN_S = 1.0
_decode = json.JSONDecoder().decode  # json.loads, less its per-call checks
_POOL_SIZE = 256  # open connections to all upstreams together (kept alive, reused)
_SEND_ATTEMPTS = 2  # a request whose pooled connection turns out closed is sent once more


class OpenAIProvider:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._http: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # base_url -> its chat-completions URL, parsed once

    def _session(self) -> aiohttp.ClientSession:
        # One pooled session for the process, made lazily inside the running loop.
        http = self._http
        if http is None or http.closed:
            http = self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_POOL_SIZE, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None),  # timeout_s is enforced per call
                trust_env=False,  # no proxies from the environment: upstreams are named
            )
        return http

    def _url(self, base_url: str) -> URL:
        url = self._urls.get(base_url)
        if url is None:
            url = self._urls[base_url] = URL(base_url.rstrip("/") + "/chat/completions")
        return url

    async def generate(
        self, target: Target, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[Event, None]:
        assert target.base_url is not None  # routing.Target requires it for openai
        url = self._url(target.base_url)
        timeout_s = target.timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # the first piece, then each next one
        response = await self._post(url, target, request, deadline)
        try:
            if response.status >= 400:
                raise TargetError(
                    f"{url}: HTTP {response.status}: {await _error_text(response, timeout_s)}"
                )
            content = response.content
            parser = SSEParser()
            usage: Usage | None = None
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await content.readany()
                except TimeoutError:
                    raise TargetError(f"no piece from {url} within {timeout_s:g}s") from None
                except aiohttp.ClientError as exc:
                    raise TargetError(f"{url}: {_describe(exc)}") from None
                events = parser.feed(chunk) if chunk else parser.close()
                for data in events:
                    if data == _DONE:
                        if not content.is_eof():  # normally the body's end came with [DONE]
                            await _drain(content)
                        response.release()  # back to the pool before the caller sees Done
                        yield Done((), usage)
                        return
                    text, reported = parse_chunk(data)
                    usage = reported or usage
                    if text:
                        yield Text(text)
                        deadline = loop.time() + timeout_s
                if not chunk:
                    raise TargetError(f"{url} ended the stream before [DONE]")
        finally:
            # Synchronous, so a cancel cannot interrupt it: the connection goes back to the
            # pool when the body was read to its end, else it is closed. Never leaked.
            response.release()

    async def _post(
        self,
        url: URL,
        target: Target,
        request: inference_pb2.GenerateRequest,
        deadline: float,
    ) -> aiohttp.ClientResponse:
        """The upstream's response (its headers) by `deadline`, else TargetError."""
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if target.api_key_env:
            key = self._environ.get(target.api_key_env)
            if not key:
                raise TargetError(f"the environment variable {target.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps(chat_request(target.model, request)).encode()
        for attempt in range(_SEND_ATTEMPTS):
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._session().post(url, data=body, headers=headers)
            except TimeoutError:
                raise TargetError(f"no response from {url} within {target.timeout_s:g}s") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the upstream closed while it sat idle fails
                # like this before the upstream saw the request: send it once more.
                if attempt + 1 == _SEND_ATTEMPTS:
                    raise TargetError(f"{url}: {_describe(exc)}") from None
            except aiohttp.ClientError as exc:
                raise TargetError(f"{url}: {_describe(exc)}") from None
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()


def chat_request(model: str, request: inference_pb2.GenerateRequest) -> dict[str, Any]:
    """The chat-completions body: the conversation (llmops.routing.prompting) and the params set."""
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


class SSEParser:
    """Server-sent events from the bytes of a body, in any chunks: the data of each event.

    Per the SSE format: lines end with CRLF, LF or CR; a blank line ends an event,
    `:` lines are comments, one space after the colon is dropped, other fields
    (`event`, `id`, `retry`) are ignored, and an event's `data:` lines are joined by
    newlines.
    """

    __slots__ = ("_after_cr", "_data", "_pending")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._pending = b""  # a line not ended yet
        self._after_cr = False  # the last chunk ended with CR: an LF first is its CRLF

    def feed(self, chunk: bytes) -> list[str]:
        """The events that `chunk` completes."""
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
        if self._pending:
            chunk = self._pending + chunk
        if not chunk:
            return []
        lines = chunk.splitlines()  # bytes: only LF, CR and CRLF end a line
        last = chunk[-1]
        self._after_cr = last == 13  # CR
        self._pending = b"" if last in (10, 13) else lines.pop()
        events: list[str] = []
        data = self._data
        for raw in lines:  # SSEParser.line, inlined: this runs for every line of every answer
            if not raw:
                if data:
                    events.append(data[0] if len(data) == 1 else "\n".join(data))
                    data.clear()
            elif raw.startswith(b"data:"):
                value = raw[6:] if raw[5:6] == b" " else raw[5:]
                data.append(value.decode("utf-8", "replace"))
            elif raw[0] != 58:  # not a `:` comment: another field (or `data` with no colon)
                self.line(raw.decode("utf-8", "replace"), events)
        return events

    def close(self) -> list[str]:
        """The last event, if the body ended without its blank line."""
        events: list[str] = []
        if self._pending:
            self.line(self._pending.decode("utf-8", "replace"), events)
            self._pending = b""
        if self._data:
            events.append("\n".join(self._data))
            self._data.clear()
        return events

    def line(self, line: str, events: list[str]) -> None:
        """Take one line (without its ending); append the event it ends, if any, to `events`."""
        if not line:
            if self._data:
                events.append("\n".join(self._data))
                self._data.clear()
            return
        if line[0] == ":":
            return
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value[:1] == " " else value)


async def sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The data of each server-sent event (its `data:` lines joined by newlines), from lines.

    See SSEParser; the provider feeds it the body's bytes instead.
    """
    parser = SSEParser()
    events: list[str] = []
    async for line in lines:
        parser.line(line, events)
        if events:
            for data in events:
                yield data
            events.clear()
    for data in parser.close():  # a last event without its blank line
        yield data


def delta_text(data: str) -> str:
    """`choices[0].delta.content` of a chunk ("" when it has none); TargetError on an error."""
    return parse_chunk(data)[0]


def parse_chunk(data: str) -> tuple[str, Usage | None]:
    """A chunk's text (`choices[0].delta.content`, "" when none) and its `usage`, if any."""
    try:
        chunk = _decode(data)
    except json.JSONDecodeError:
        raise TargetError(f"the upstream sent an event that is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise TargetError(f"the upstream sent an unexpected event: {data[:200]!r}")
    if "error" in chunk:  # vLLM and others report errors inside the stream
        raise TargetError(f"the upstream reported an error: {_message(chunk)}")
    reported = chunk.get("usage")
    usage = None if reported is None else _usage(reported)
    choices = chunk.get("choices") or []  # a usage-only chunk has none
    if not choices or not isinstance(choices[0], dict):
        return "", usage
    delta = choices[0].get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ""), usage


def _usage(value: Any) -> Usage | None:
    """OpenAI's `usage` object (`prompt_tokens`, `completion_tokens`, and the cached and
    reasoning parts in `*_tokens_details`); None if absent or odd."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cached = _detail(value, "prompt_tokens_details", "cached_tokens")
    reasoning = _detail(value, "completion_tokens_details", "reasoning_tokens")
    return Usage(prompt, completion, min(cached, prompt), min(reasoning, completion))


def _detail(usage: dict[str, Any], details: str, name: str) -> int:
    value = (usage.get(details) or {}).get(name) if isinstance(usage.get(details), dict) else 0
    return value if isinstance(value, int) and value > 0 else 0


async def _error_text(response: aiohttp.ClientResponse, timeout_s: float) -> str:
    """The upstream's error message (OpenAI's `{"error": {"message": ...}}`, or the body)."""
    reason = response.reason or ""
    try:
        async with asyncio.timeout(timeout_s):
            body = await response.read()
    except (TimeoutError, aiohttp.ClientError):
        return reason
    text = body.decode("utf-8", errors="replace")
    try:
        return _message(json.loads(text))
    except json.JSONDecodeError:
        return text.strip()[:_MAX_ERROR_CHARS] or reason


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what is left of the body after [DONE] (normally nothing but its end), so that
    the connection can be reused; an upstream that does not end it in time gets its
    connection closed instead (by the release that follows)."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            while await content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


def _describe(exc: aiohttp.ClientError) -> str:
    """The error as `Kind: message`; a failure to connect is a ConnectError, as before."""
    kind = "ConnectError" if isinstance(exc, aiohttp.ClientConnectorError) else type(exc).__name__
    return f"{kind}: {exc}"


def _message(payload: Any) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_MAX_ERROR_CHARS]
    if isinstance(error, str):
        return error[:_MAX_ERROR_CHARS]
    return json.dumps(payload)[:_MAX_ERROR_CHARS]
