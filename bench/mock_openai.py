"""A mock OpenAI-compatible upstream for bench/chat.py: chat completions after a fixed delay.

    .venv/bin/python bench/mock_openai.py [--port 0] [--delay-ms 50]

A raw asyncio protocol (HTTP/1.1 with keep-alive, no framework, no task per
request: the reply is scheduled with `call_later`), so that it costs as little
CPU as possible and the proxies in front of it are what is measured. Every
request gets the same answer after `--delay-ms`:

- `"stream": false` (default): one `chat.completion` JSON object with `usage`;
- `"stream": true`: `text/event-stream` (chunked), one `chat.completion.chunk`
  per piece (`choices[0].delta.content`), a final chunk with `finish_reason`,
  a usage-only chunk (`choices: []`) when `stream_options.include_usage` is
  set, then `data: [DONE]` — all written at once when the delay is over.

Prints `port <n>` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

ANSWER = "Oil the chain every 200 km, and after every ride in the rain [1]."
PIECES = [w + " " for w in ANSWER.split(" ")]
PIECES[-1] = PIECES[-1].rstrip()
COMPLETION_TOKENS = len(PIECES)

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def completion_body(model: str, prompt_tokens: int) -> bytes:
    return _json(
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": COMPLETION_TOKENS,
                "total_tokens": prompt_tokens + COMPLETION_TOKENS,
            },
        }
    )


def stream_events(model: str, prompt_tokens: int, include_usage: bool) -> bytes:
    created = int(time.time())

    def chunk(delta: dict[str, str], finish: str | None) -> dict[str, object]:
        return {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    events = [chunk({"role": "assistant", "content": ""}, None)]
    events += [chunk({"content": p}, None) for p in PIECES]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append(
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": COMPLETION_TOKENS,
                    "total_tokens": prompt_tokens + COMPLETION_TOKENS,
                },
            }
        )
    return b"".join(b"data: " + _json(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: keep-alive\r\n\r\n"
        + body
    )


def _chunked(body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    )
    return head + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


class MockProtocol(asyncio.Protocol):
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._close()
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            method, _, rest = lines[0].partition(" ")
            path = rest.partition(" ")[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value.strip())
                elif lname == "transfer-encoding":  # no client of the bench sends chunked bodies
                    self._send(_response("411 Length Required", b"text/plain", b"chunked"))
                    self._close()
                    return
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            self._handle(method, path, body)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path in ("/health", "/v1/models"):
            payload = _json({"object": "list", "data": [{"id": "mock", "object": "model"}]})
            self._send(_response("200 OK", b"application/json", payload))
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            self._send(_response("404 Not Found", b"application/json", b'{"error":"not found"}'))
            return
        try:
            request = json.loads(body)
        except ValueError:
            self._send(_response("400 Bad Request", b"application/json", b'{"error":"bad json"}'))
            return
        model = str(request.get("model") or "mock")
        prompt_tokens = max(1, len(body) // 4)
        if request.get("stream"):
            options = request.get("stream_options") or {}
            events = stream_events(model, prompt_tokens, bool(options.get("include_usage")))
            reply = _chunked(events)
        else:
            reply = _response("200 OK", b"application/json", completion_body(model, prompt_tokens))
        self.loop.call_later(self.delay_s, self._send, reply)

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(port: int, delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(delay_s), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
