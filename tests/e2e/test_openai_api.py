"""The gateway's OpenAI-compatible HTTP API, driven by the official `openai` package unchanged."""

from __future__ import annotations

import math

import grpc
import httpx
import openai
import pytest

from llmops.apikeys import Limits
from llmops.grpcutil import channel
from llmops.v1 import embedding_pb2, embedding_pb2_grpc, gateway_pb2_grpc
from tests.e2e.gateway_support import (
    Tenant,
    ask,
    interaction_events,
    new_tenant,
    openai_client,
)
from tests.support import Platform

QUESTION = "Which port does Falcon listen on for admin requests?"
NO_CACHE = {"llmops": {"cache": {"no_exact": True, "no_semantic": True}}}


async def test_chat_completions_stream_and_not_give_the_same_grounded_answer(
    platform: Platform, falcon: Tenant, input_only: str
) -> None:
    api = openai_client(platform, falcon.key)
    unbuffered = {"llmops": {**NO_CACHE["llmops"], "guardrail_policy": input_only}}
    messages = [{"role": "user", "content": QUESTION}]
    raw = await api.chat.completions.with_raw_response.create(
        model="answerer",
        messages=messages,
        extra_body=NO_CACHE,  # type: ignore[arg-type]
    )
    completion = raw.parse()
    assert float(raw.headers["x-llmops-overhead-ms"]) > 0
    assert raw.headers["x-llmops-cache"] == "bypass"
    answer = completion.choices[0].message.content or ""
    assert "7341" in answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "triton/extractive_answerer"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extras = completion.model_extra or {}
    assert [c["doc_id"] for c in extras["llmops"]["citations"]] == ["falcon-notes"]
    assert extras["llmops"]["trace_id"] == raw.headers["x-llmops-trace-id"]

    stream = await api.chat.completions.create(
        model="answerer",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
        extra_body=unbuffered,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3  # streamed, not one blob
    assert "".join(pieces) == answer
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert len({c.id for c in chunks}) == 1
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == completion.usage.completion_tokens
    assert usage_chunk.usage.prompt_tokens == completion.usage.prompt_tokens
    assert (usage_chunk.model_extra or {})["llmops"]["citations"][0]["doc_id"] == "falcon-notes"

    async with interaction_events(platform) as events:
        _, unary, streamed = await events.for_key(falcon.key_id, 3)
    assert unary.api == streamed.api == "openai.chat"
    assert not unary.streamed and streamed.streamed
    assert unary.usage == streamed.usage


async def test_rag_and_prompt_selection_through_the_llmops_field(
    platform: Platform, falcon: Tenant
) -> None:
    api = openai_client(platform, falcon.key)
    off = await api.chat.completions.create(
        model="answerer",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"llmops": {"retrieval": {"disabled": True}, "prompt": "concise"}},
    )
    assert "7341" not in (off.choices[0].message.content or "")
    assert (off.model_extra or {})["llmops"]["prompt"] == "concise"
    assert (off.model_extra or {})["llmops"]["citations"] == []


async def test_embeddings_match_the_embedding_service(platform: Platform, falcon: Tenant) -> None:
    api = openai_client(platform, falcon.key)
    texts = ["Falcon listens on port 7341.", "A heat pump moves heat."]
    as_base64 = await api.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # SDK default
    as_floats = await api.embeddings.create(
        model="all-MiniLM-L6-v2", input=texts, encoding_format="float"
    )
    async with channel(platform.addr("embedding")) as ch:
        direct = await embedding_pb2_grpc.EmbeddingStub(ch).Embed(
            embedding_pb2.EmbedRequest(texts=texts), timeout=30
        )
    for got in (as_base64, as_floats):
        assert [d.index for d in got.data] == [0, 1]
        for item, vector in zip(got.data, direct.vectors, strict=True):
            assert len(item.embedding) == 384
            assert all(
                math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)
                for a, b in zip(item.embedding, vector.values, strict=True)
            )
        assert got.usage.prompt_tokens == sum(direct.token_counts)


async def test_models_lists_the_aliases(platform: Platform) -> None:
    models = await openai_client(platform, platform.api_key).models.list()
    ids = [m.id for m in models.data]
    assert ids[0] == "answerer" and "llm" in ids


async def test_errors_have_openai_shapes_and_statuses(platform: Platform, falcon: Tenant) -> None:
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        await openai_client(platform, "sk-wrong").models.list()
    assert unauthenticated.value.status_code == 401

    api = openai_client(platform, falcon.key)
    with pytest.raises(openai.NotFoundError) as not_found:
        await api.chat.completions.create(
            model="no-such-model",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body=NO_CACHE,
        )
    assert "no-such-model" in str(not_found.value)
    with pytest.raises(openai.BadRequestError) as bad:
        await api.chat.completions.create(model="answerer", messages=[])
    assert "messages" in str(bad.value)

    async with httpx.AsyncClient(trust_env=False) as http:
        broken = await http.post(
            f"{platform.http_base_url}/chat/completions",
            headers={"Authorization": f"Bearer {falcon.key}"},
            content=b"{not json",
        )
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "invalid_request_error"

    async with httpx.AsyncClient(trust_env=False) as http:
        huge = await http.post(
            f"{platform.http_base_url}/chat/completions",
            headers={"Authorization": f"Bearer {falcon.key}", "Content-Type": "application/json"},
            content=b'{"messages": [{"role": "user", "content": "' + b"x" * 1_100_000 + b'"}]}',
        )
    assert huge.status_code == 400
    assert "larger than 1000000 bytes" in huge.json()["error"]["message"]


async def test_rate_limited_requests_get_429_with_retry_after(platform: Platform) -> None:
    tenant = await new_tenant(platform, Limits(requests_per_minute=2))
    api = openai_client(platform, tenant.key)
    await api.models.list()  # not limited: only chat and embeddings count
    await api.embeddings.create(model="m", input="one")  # the probe took the first request
    with pytest.raises(openai.RateLimitError) as limited:
        await api.embeddings.create(model="m", input="two")
    assert limited.value.status_code == 429
    assert 1 <= int(limited.value.response.headers["Retry-After"]) <= 60
    assert "2 requests per minute" in str(limited.value)
    async with channel(platform.addr("gateway")) as ch:  # gRPC sees the same spent minute
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
                ask(QUESTION), metadata=tenant.metadata, timeout=10
            )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
