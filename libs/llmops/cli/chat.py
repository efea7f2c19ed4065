"""`llmops chat`: a grounded answer streamed from the gateway, then citations, tokens, latency."""

from __future__ import annotations

import sys
import time

import grpc
from rich.console import Console

from llmops.grpcutil import channel
from llmops.v1 import gateway_pb2, gateway_pb2_grpc, inference_pb2


async def run_chat(
    address: str,
    key: str,
    question: str,
    model: str,
    prompt: str,
    collection: str,
    no_retrieval: bool,
    no_cache: bool,
) -> int:
    request = gateway_pb2.ChatRequest(
        messages=[inference_pb2.ChatMessage(role="user", content=question)],
        model=model,
        prompt=prompt,
        collection=collection,
        retrieval=gateway_pb2.RetrievalOptions(disabled=no_retrieval),
        cache=gateway_pb2.CacheOptions(no_exact=no_cache, no_semantic=no_cache),
    )
    console = Console(stderr=True, soft_wrap=True)
    started = time.perf_counter()
    final: gateway_pb2.ChatFinal | None = None
    async with channel(address) as ch:
        call = gateway_pb2_grpc.GatewayStub(ch).Chat(
            request, metadata=(("authorization", f"Bearer {key}"),), timeout=120
        )
        try:
            async for response in call:
                if response.HasField("final"):
                    final = response.final
                else:
                    sys.stdout.write(response.delta.text)
                    sys.stdout.flush()
        except grpc.aio.AioRpcError as exc:
            console.print(f"\n[red]chat failed: {exc.code().name}: {exc.details()}[/red]")
            return 1
    sys.stdout.write("\n")
    if final is None:
        console.print("[red]the stream ended without a final message[/red]")
        return 1
    for citation in final.citations:
        console.print(
            f"  [{citation.number}] {citation.source or citation.doc_id}"
            f"{' — ' + citation.title if citation.title else ''}  (score {citation.score:.3f})"
        )
    cache = gateway_pb2.CacheStatus.Name(final.cache).removeprefix("CACHE_STATUS_").lower()
    console.print(
        f"[dim]{final.model_used} · prompt {final.prompt}@{final.prompt_version} · "
        f"tokens {final.usage.input_tokens} in / {final.usage.output_tokens} out · "
        f"first token {final.time_to_first_token_ms:.0f} ms · "
        f"total {(time.perf_counter() - started) * 1000:.0f} ms · "
        f"gateway overhead {final.overhead_ms:.1f} ms · cache {cache} · trace {final.trace_id}"
        "[/dim]"
    )
    return 0
