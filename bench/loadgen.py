"""Closed-loop load generator for bench/chat.py, run as its own process.

    .venv/bin/python bench/loadgen.py '<spec json>'   # prints one JSON result line

`concurrency` clients each send one request, wait for the whole answer, and
send the next, for `warmup_s` (not counted) and then `duration_s`. A request
counts when it completes inside the measured window. Kinds of target:

- `http`: POST `body` to `url` over keep-alive connections (one aiohttp
  session, one connection per client); `stream` reads the SSE body to its end
  and times the first chunk that carries content (time to first token);
- `gateway`: gRPC `llmops.v1.Gateway/Chat` (server streaming), one channel;
- `triton`: Triton `stream_infer` (decoupled model) through tritonclient.grpc.aio,
  exactly as the inference service calls it, one stream per request.

The generator is kept lean (no per-request parsing beyond finding the first
token) and reports its own CPU use, so that it is visibly not the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# A function that performs one request, given its start time; returns
# (time of the first token or None, extra figures such as the gateway's overhead).
Request = Callable[[float], Awaitable[tuple[float | None, dict[str, float] | None]]]

_CONTENT = re.compile(rb'"content":\s*"[^"]')


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "mean": sum(ordered) / len(ordered),
        "max": ordered[-1],
    }


async def closed_loop(
    one: Request, concurrency: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    now = time.perf_counter
    begin = now()
    window_start, window_end = begin + warmup_s, begin + warmup_s + duration_s
    latencies: list[float] = []
    ttfts: list[float] = []
    extras: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    cpu_at_window: list[float] = []

    async def client() -> None:
        while True:
            started = now()
            if started >= window_end:
                return
            try:
                first, extra = await one(started)
            except Exception as exc:  # counted and shown, the run goes on
                key = f"{type(exc).__name__}: {str(exc)[:160]}"
                errors[key] = errors.get(key, 0) + 1
                await asyncio.sleep(0.01)
                continue
            ended = now()
            if window_start <= ended <= window_end:
                latencies.append((ended - started) * 1000)
                if first is not None:
                    ttfts.append((first - started) * 1000)
                for k, v in (extra or {}).items():
                    extras.setdefault(k, []).append(v)

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, window_start - now()))
        cpu_at_window.append(time.process_time())

    marker = asyncio.create_task(mark_window())
    await asyncio.gather(*(client() for _ in range(concurrency)))
    await marker
    cpu_s = time.process_time() - cpu_at_window[0]
    return {
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests": len(latencies),
        "rps": len(latencies) / duration_s,
        "latency_ms": percentiles(latencies),
        "ttft_ms": percentiles(ttfts),
        "extra_ms": {k: percentiles(v) for k, v in extras.items()},
        "errors": errors,
        # the load generator's own CPU over the window (1.0 = one core busy)
        "loadgen_cpu": cpu_s / (now() - window_start),
    }


async def http_target(spec: dict[str, Any]) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import aiohttp

    connector = aiohttp.TCPConnector(
        limit=spec["concurrency"], keepalive_timeout=60, ttl_dns_cache=None
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("User-Agent",),
    )
    url, stream = spec["url"], bool(spec["body"].get("stream"))
    body = json.dumps(spec["body"]).encode()
    headers = {"Content-Type": "application/json", **spec.get("headers", {})}
    now = time.perf_counter

    async def one(started: float) -> tuple[float | None, dict[str, float] | None]:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                text = (await response.read())[:200]
                raise RuntimeError(f"HTTP {response.status}: {text!r}")
            if not stream:
                await response.read()
                return None, None
            first = None
            async for chunk in response.content.iter_any():
                if first is None and _CONTENT.search(chunk):
                    first = now()
            return first, None

    return one, session.close


async def gateway_target(spec: dict[str, Any]) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import grpc

    from llmops.v1 import gateway_pb2, gateway_pb2_grpc, inference_pb2

    channel = grpc.aio.insecure_channel(spec["addr"], options=[("grpc.enable_http_proxy", 0)])
    stub = gateway_pb2_grpc.GatewayStub(channel)
    request = gateway_pb2.ChatRequest(
        messages=[inference_pb2.ChatMessage(role="user", content=spec["question"])],
        model=spec.get("model", ""),
        retrieval=gateway_pb2.RetrievalOptions(**spec.get("retrieval", {})),
        cache=gateway_pb2.CacheOptions(no_exact=True, no_semantic=True),
    )
    metadata = (("authorization", f"Bearer {spec['api_key']}"),)
    now = time.perf_counter

    async def one(started: float) -> tuple[float | None, dict[str, float] | None]:
        first = None
        extra: dict[str, float] = {}
        async for response in stub.Chat(request, metadata=metadata):
            if first is None and response.HasField("delta"):
                first = now()
            elif response.HasField("final"):
                final = response.final
                extra["gateway_overhead"] = final.overhead_ms
                for step in final.steps:
                    extra[f"step_{step.step}"] = step.ms
        if not extra:
            raise RuntimeError("the stream ended without a final message")
        return first, extra

    return one, channel.close


async def triton_target(spec: dict[str, Any]) -> tuple[Request, Callable[[], Awaitable[None]]]:
    import numpy as np
    import tritonclient.grpc.aio as triton_aio
    from tritonclient.grpc import InferInput

    client = triton_aio.InferenceServerClient(
        spec["addr"], channel_args=[("grpc.enable_http_proxy", 0)]
    )
    question = InferInput("QUESTION", [1], "BYTES")
    question.set_data_from_numpy(np.array([spec["question"].encode()], dtype=np.object_))
    passages = InferInput("PASSAGES", [len(spec["passages"])], "BYTES")
    passages.set_data_from_numpy(np.array([p.encode() for p in spec["passages"]], dtype=np.object_))
    inputs = [question, passages]
    model = spec["model"]
    now = time.perf_counter

    async def one(started: float) -> tuple[float | None, dict[str, float] | None]:
        async def requests() -> Any:
            yield {"model_name": model, "inputs": inputs}

        responses = client.stream_infer(requests())
        first = None
        try:
            async for result, error in responses:
                if error is not None:
                    raise RuntimeError(f"Triton: {error}")
                if first is None and result.as_numpy("TEXT") is not None:
                    first = now()
                if result.get_response().parameters["triton_final_response"].bool_param:
                    return first, None
        finally:
            responses.cancel()
        raise RuntimeError("Triton ended the stream before the final response")

    return one, client.close


TARGETS = {"http": http_target, "gateway": gateway_target, "triton": triton_target}


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    one, close = await TARGETS[spec["kind"]](spec)
    try:
        return await closed_loop(
            one, spec["concurrency"], spec.get("warmup_s", 2.0), spec["duration_s"]
        )
    finally:
        await close()


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))), flush=True)


if __name__ == "__main__":
    main()
