"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 that streams real SSE bytes.

HTTP/1.1 over asyncio streams, chunked transfer encoding, `data: {json}\\n\\n`
per piece and `data: [DONE]\\n\\n` at the end, as the OpenAI API, vLLM and TGI
send them; with `usage` set, a request that asks for it (`stream_options:
{include_usage: true}`) gets a last chunk with empty `choices` and that usage
before [DONE], as OpenAI sends it. `mode` picks the behaviour of the next
requests; `fail_first` answers that many requests with HTTP 500 first. With
`keep_alive` a connection serves one request after another (as real upstreams
do) instead of being closed after its first; `accepted` and `open_connections`
count the connections, to check that a client reuses and releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.support import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class OpenAIMock:
    pieces: list[str]
    port: int = field(default_factory=free_port)
    # "ok": every piece then [DONE]; "error": HTTP 500; "stall": headers, then nothing;
    # "stall_after_first": one piece, then nothing; "endless": pieces until the client leaves.
    mode: str = "ok"
    gap_s: float = 0.0
    # {"prompt_tokens": n, "completion_tokens": m, maybe "prompt_tokens_details": {...}}
    usage: dict[str, Any] | None = None
    fail_first: int = 0
    keep_alive: bool = False
    accepted: int = 0  # connections accepted so far
    open_connections: int = 0  # of those, the ones still open
    requests: list[Received] = field(default_factory=list)
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)  # type: ignore[arg-type]
        self.accepted += 1
        self.open_connections += 1
        try:
            served = 0
            while served == 0 or self.keep_alive:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except asyncio.IncompleteReadError as exc:
                    if served and not exc.partial:  # the client closed an idle connection
                        return
                    raise
                request_line, *lines = head.strip("\r\n").split("\r\n")
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = Received(request_line.split()[1], headers, json.loads(body))
                self.requests.append(received)
                served += 1
                if not await self._respond(writer, received):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.client_left.set()
        finally:
            self.open_connections -= 1
            self.handlers.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, writer: asyncio.StreamWriter, received: Received) -> bool:
        """Answer one request; whether the connection may serve another."""
        if self.mode == "error" or len(self.requests) <= self.fail_first:
            error = json.dumps(
                {"error": {"message": "the model is overloaded", "type": "server_error"}}
            ).encode()
            writer.write(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(error), error)
            )
            await writer.drain()
            return False
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        if self.mode == "stall":
            await asyncio.sleep(3600)
        # The first chunk carries the role only, as OpenAI's does.
        await self._event(writer, _chunk({"role": "assistant", "content": ""}))
        if self.mode == "endless":
            while True:
                await self._event(writer, _chunk({"content": "more "}))
                await asyncio.sleep(0.02)
        for i, piece in enumerate(self.pieces):
            await self._event(writer, _chunk({"content": piece}))
            if self.mode == "stall_after_first" and i == 0:
                await asyncio.sleep(3600)
            await asyncio.sleep(self.gap_s)
        await self._event(writer, _chunk({}, finish_reason="stop"))
        options = received.body.get("stream_options") or {}
        if self.usage is not None and options.get("include_usage"):
            total = self.usage["prompt_tokens"] + self.usage["completion_tokens"]
            usage = {**self.usage, "total_tokens": total}
            await self._event(writer, _chunk(None, usage=usage))
        await self._event(writer, "[DONE]")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    @staticmethod
    async def _event(writer: asyncio.StreamWriter, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        writer.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        await writer.drain()


def _chunk(
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
) -> str:
    """A chat.completion.chunk; no delta: the usage-only chunk (empty choices)."""
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    )
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "mock",
        "choices": choices,
    }
    if usage is not None:
        chunk["usage"] = usage
    return json.dumps(chunk)


@contextlib.asynccontextmanager
async def serve(pieces: list[str], **options: Any) -> AsyncIterator[OpenAIMock]:
    mock = OpenAIMock(pieces, **options)
    server = await asyncio.start_server(mock._handle, "127.0.0.1", mock.port)
    try:
        yield mock
    finally:
        server.close()
        for task in list(mock.handlers):  # those still stalled or streaming
            task.cancel()
        await server.wait_closed()
