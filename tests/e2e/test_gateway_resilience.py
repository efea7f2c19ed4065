"""The gateway when upstreams fail or dawdle: fallback past a stopped Triton, deadlines, 503s.

A platform of its own: its routes put a local OpenAI-compatible server (real
SSE over HTTP) behind Triton, so stopping Triton mid-test has somewhere to go.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import httpx
import pytest

from llmops.grpcutil import channel
from llmops.v1 import events_pb2, gateway_pb2, gateway_pb2_grpc
from tests.e2e.gateway_support import TIMEOUT, ask, interaction_events
from tests.inference.openai_mock import serve
from tests.support import Platform, run_platform

ROUTES = """\
default: answerer
aliases:
  answerer:
    - {{provider: triton, model: extractive_answerer, timeout_s: 2}}
    - {{provider: openai, model: mock-large, base_url: "{mock}", timeout_s: 5}}
  slow:
    - {{provider: openai, model: mock-large, base_url: "{mock}", timeout_s: 5}}
"""
PIECES = ["The ", "mock ", "answered."]


async def answer(
    stub: gateway_pb2_grpc.GatewayStub, metadata: tuple[tuple[str, str], ...]
) -> gateway_pb2.ChatReply:
    reply: gateway_pb2.ChatReply = await stub.ChatOnce(
        ask("What does error E-417 mean?", retrieval_off=True, no_cache=True),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    return reply


def stopped(platform: Platform) -> int:
    triton = platform.pid("triton")
    os.kill(triton, signal.SIGSTOP)  # accepts connections, never answers
    return triton


async def test_fallback_deadline_and_no_fallback_left(tmp_path: Path) -> None:
    async with serve(PIECES) as mock:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(mock=mock.base_url))
        extra = {"LLMOPS_ROUTES_FILE": str(routes)}
        with run_platform(tmp_path / "data", triton=True, extra_env=extra) as platform:
            metadata = (("authorization", f"Bearer {platform.api_key}"),)
            async with channel(platform.addr("gateway")) as ch:
                stub = gateway_pb2_grpc.GatewayStub(ch)
                healthy = await answer(stub, metadata)
                assert healthy.final.model_used == "triton/extractive_answerer"
                assert mock.requests == []

                # Triton stops answering mid-test: the same alias falls back to the mock.
                triton = stopped(platform)
                try:
                    fallback = await answer(stub, metadata)
                    assert fallback.final.model_used == "openai/mock-large"
                    assert fallback.text == "".join(PIECES)

                    # No fallback left: a clear UNAVAILABLE over gRPC, 503 over HTTP.
                    mock.mode = "error"
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await answer(stub, metadata)
                    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                    details = raised.value.details() or ""
                    assert "no target of model alias 'answerer' answered" in details, details
                    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
                        reply = await http.post(
                            f"{platform.http_base_url}/chat/completions",
                            headers={"Authorization": f"Bearer {platform.api_key}"},
                            json={
                                "model": "answerer",
                                "messages": [{"role": "user", "content": "E-417?"}],
                                "llmops": {"cache": {"no_exact": True, "no_semantic": True}},
                            },
                        )
                    assert reply.status_code == 503, reply.text
                    assert "no target of model alias" in reply.json()["error"]["message"]
                finally:
                    os.kill(triton, signal.SIGCONT)

                # A caller's deadline stops an upstream that would stream forever.
                mock.mode = "endless"
                mock.client_left.clear()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.ChatOnce(
                        ask("Tell me everything.", retrieval_off=True, no_cache=True, model="slow"),
                        metadata=metadata,
                        timeout=0.5,
                    )
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.wait_for(mock.client_left.wait(), 5)

                # A caller that cancels mid-stream stops the upstream too.
                mock.client_left.clear()
                call = stub.Chat(
                    ask("Tell me more.", retrieval_off=True, no_cache=True, model="slow"),
                    metadata=metadata,
                    timeout=TIMEOUT,
                )
                first = await call.read()
                assert first.WhichOneof("event") == "delta"
                call.cancel()
                await asyncio.wait_for(mock.client_left.wait(), 5)

                mock.mode = "ok"
                await hosted_aliases_skip_the_inference_service(stub, metadata, platform)

            key_id = platform.api_key.split("-")[1]
            async with interaction_events(platform) as events:
                check_events(await events.for_key(key_id, 8))


async def hosted_aliases_skip_the_inference_service(
    stub: gateway_pb2_grpc.GatewayStub, metadata: tuple[tuple[str, str], ...], platform: Platform
) -> None:
    """LLMOPS_ROUTING=auto: the hosted alias is routed inside the gateway, so it answers with
    the inference service stopped; the alias with a Triton target needs the service."""
    inference = platform.pid("inference")
    os.kill(inference, signal.SIGSTOP)
    try:
        hosted = await stub.ChatOnce(
            ask("E-417?", retrieval_off=True, no_cache=True, model="slow"),
            metadata=metadata,
            timeout=TIMEOUT,
        )
        assert hosted.final.model_used == "openai/mock-large"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ChatOnce(
                ask("E-417?", retrieval_off=True, no_cache=True), metadata=metadata, timeout=1.0
            )
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        os.kill(inference, signal.SIGCONT)


def check_events(recorded: list[events_pb2.InteractionEvent]) -> None:
    """Each of the eight requests above left one event saying how it ended."""
    ok, fell_back, unavailable, unavailable_http, deadline, cancelled, hosted, stuck = recorded
    assert ok.status == "OK" and not ok.failed_targets
    assert fell_back.status == "OK" and fell_back.model_used == "openai/mock-large"
    assert fell_back.failed_targets[0].startswith("triton/extractive_answerer: ")
    assert unavailable.status == "UNAVAILABLE" and unavailable.api == "grpc.chat_once"
    assert unavailable_http.status == "UNAVAILABLE" and unavailable_http.api == "openai.chat"
    assert deadline.status in ("DEADLINE_EXCEEDED", "CANCELLED")
    assert deadline.total_ms < 2000
    assert cancelled.status == "CANCELLED" and cancelled.streamed
    assert hosted.status == "OK" and hosted.model_used == "openai/mock-large"
    assert stuck.status in ("DEADLINE_EXCEEDED", "CANCELLED")
