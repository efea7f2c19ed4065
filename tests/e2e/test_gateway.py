"""The gateway over gRPC on the real platform: grounded answers, auth, limits, caches, events."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator

import grpc
import nats
import pytest

from gateway.caches import semantic_scope
from llmops.apikeys import KeyAdmin, Limits
from llmops.bus.topology import API_KEYS_BUCKET, RATE_LIMITS_BUCKET
from llmops.grpcutil import channel
from llmops.prompts.store import PromptStore
from llmops.v1 import events_pb2, gateway_pb2, gateway_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.e2e.gateway_support import (
    FACT_DOC,
    TIMEOUT,
    Tenant,
    ask,
    ingest,
    interaction_events,
    new_tenant,
)
from tests.support import Platform

ANSWERER = "triton/extractive_answerer"
QUESTION = "Which port does Falcon listen on for admin requests?"


@pytest.fixture
async def gateway(platform: Platform) -> AsyncIterator[gateway_pb2_grpc.GatewayStub]:
    ch: grpc.aio.Channel = channel(platform.addr("gateway"))
    yield gateway_pb2_grpc.GatewayStub(ch)
    await ch.close()


async def chat(
    gateway: gateway_pb2_grpc.GatewayStub,
    tenant: Tenant,
    request: gateway_pb2.ChatRequest,
) -> tuple[list[str], gateway_pb2.ChatFinal, dict[str, str]]:
    """The deltas' texts, the final message (which must come last) and the trailing metadata."""
    call = gateway.Chat(request, metadata=tenant.metadata, timeout=TIMEOUT)
    responses = [r async for r in call]
    *deltas, final = responses
    assert all(r.WhichOneof("event") == "delta" for r in deltas), responses
    assert final.WhichOneof("event") == "final", responses
    trailing = {k: v for k, v in (await call.trailing_metadata() or ()) if isinstance(v, str)}
    return [r.delta.text for r in deltas], final.final, trailing


async def test_a_grounded_answer_streams_then_cites_the_ingested_document(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant, input_only: str
) -> None:
    question = ask(QUESTION, no_cache=True, guardrail_policy=input_only)
    pieces, final, trailing = await chat(gateway, falcon, question)
    answer = "".join(pieces)
    assert len(pieces) > 3, pieces  # streamed piece by piece, not in one message
    assert "7341" in answer, answer
    assert final.model_used == ANSWERER
    assert [c.doc_id for c in final.citations] == ["falcon-notes"]
    assert final.citations[0].source == "falcon-notes.md"
    assert final.citations[0].number == 1 and final.citations[0].chunk_id
    assert final.usage.input_tokens > final.usage.output_tokens > 0
    assert final.cache == gateway_pb2.CACHE_STATUS_BYPASS
    assert re.fullmatch(r"[0-9a-f]{32}", final.trace_id)
    assert final.prompt == "default" and final.prompt_version == "1"
    steps = {s.step: s.ms for s in final.steps}
    assert {"limits", "retrieval", "prompt", "inference"} <= steps.keys(), steps
    assert 0 < final.time_to_first_token_ms <= steps["retrieval"] + steps["inference"] + 50
    # The overhead is the gateway's own time: it excludes the upstream steps.
    assert float(trailing["x-llmops-overhead-ms"]) == pytest.approx(final.overhead_ms, abs=1e-3)
    assert 0 < final.overhead_ms < steps["retrieval"] + steps["inference"]

    once = await gateway.ChatOnce(question, metadata=falcon.metadata, timeout=TIMEOUT)
    assert once.text == answer
    assert [c.chunk_id for c in once.final.citations] == [c.chunk_id for c in final.citations]
    assert once.final.usage == final.usage  # streamed and unary count the same


async def test_tenants_only_get_answers_from_their_own_documents(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    stranger = await new_tenant(platform)
    pieces, final, _ = await chat(gateway, stranger, ask(QUESTION, no_cache=True))
    assert "7341" not in "".join(pieces)
    assert list(final.citations) == []


async def test_unknown_or_missing_keys_are_unauthenticated(
    gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    bad_key = falcon.key[:-4] + ("AAAA" if not falcon.key.endswith("AAAA") else "BBBB")
    for metadata in [(("authorization", f"Bearer {bad_key}"),), (), (("authorization", "x"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway.ChatOnce(ask(QUESTION), metadata=metadata, timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "API key" in (raised.value.details() or "")


async def test_a_revoked_key_is_refused(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub
) -> None:
    tenant = await new_tenant(platform)
    result = platform.cli("keys", "revoke", tenant.key_id)
    assert result.returncode == 0, result.stderr
    for _ in range(100):  # the gateway learns of it through its KV watch
        try:
            await gateway.ChatOnce(
                ask("?", prompt="nope"), metadata=tenant.metadata, timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return
        await asyncio.sleep(0.05)
    pytest.fail("the revoked key was still accepted")


async def test_bad_requests_say_what_is_wrong(
    gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    cases = [
        (gateway_pb2.ChatRequest(), grpc.StatusCode.INVALID_ARGUMENT, "messages is empty"),
        (ask("   "), grpc.StatusCode.INVALID_ARGUMENT, "non-empty user message"),
        (ask(QUESTION, prompt="nope"), grpc.StatusCode.NOT_FOUND, "unknown prompt 'nope'"),
        (
            ask(QUESTION, prompt="default", prompt_version="9"),
            grpc.StatusCode.NOT_FOUND,
            "has no version 9; versions: v1",
        ),
        (ask(QUESTION, model="nope", no_cache=True), grpc.StatusCode.NOT_FOUND, "'nope'"),
    ]
    for request, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway.ChatOnce(request, metadata=falcon.metadata, timeout=TIMEOUT)
        assert raised.value.code() == code, raised.value
        assert message in (raised.value.details() or ""), raised.value.details()


async def test_the_request_limit_is_enforced_with_a_retry_hint(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub
) -> None:
    tenant = await new_tenant(platform, Limits(requests_per_minute=3))
    request = ask("?", prompt="nope")  # cheap: refused after the limit check
    codes = []
    for _ in range(5):
        try:
            await gateway.ChatOnce(request, metadata=tenant.metadata, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                trailing = dict(exc.trailing_metadata() or ())
                assert 1 <= int(trailing["retry-after-s"]) <= 60
                assert "3 requests per minute" in (exc.details() or "")
    # new_tenant's probe took one of the three.
    assert codes == [grpc.StatusCode.NOT_FOUND] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3


async def test_a_tenant_quota_holds_over_all_of_its_keys(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub
) -> None:
    first = await new_tenant(platform)
    result = platform.cli("tenants", "set", first.name, "--rpm", "4")
    assert result.returncode == 0 and "4 requests" in result.stdout, result.stderr
    nc = await nats.connect(platform.nats_url)
    try:
        second = Tenant(first.name, (await KeyAdmin(nc.jetstream()).create_key(first.name)).key)
    finally:
        await nc.close()
    await asyncio.sleep(0.5)  # the gateway's watches see the quota and the new key
    request = ask("?", prompt="nope")  # cheap: refused after the limit check
    codes = []
    for i in range(6):
        key = (first, second)[i % 2]
        try:
            await gateway.ChatOnce(request, metadata=key.metadata, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert f"tenant {first.name} made its 4 requests per minute" in str(exc.details())
    assert codes == [grpc.StatusCode.NOT_FOUND] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2


async def test_the_token_limit_refuses_once_the_minute_is_spent(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    tenant = await new_tenant(platform, Limits(tokens_per_minute=50))
    await ingest(platform, tenant.name, "falcon-notes", FACT_DOC)
    _, final, _ = await chat(gateway, tenant, ask(QUESTION, no_cache=True))
    assert final.usage.input_tokens + final.usage.output_tokens > 50
    for _ in range(50):  # the charge lands just after the reply
        try:
            await gateway.ChatOnce(ask(QUESTION), metadata=tenant.metadata, timeout=TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "50 tokens per minute" in (exc.details() or "")
            return
        await asyncio.sleep(0.1)
    pytest.fail("the token limit was never enforced")


async def test_request_limits_hold_across_gateway_replicas(platform: Platform) -> None:
    """Two limiters (two replicas) on one NATS admit exactly the limit between them."""
    from gateway.ratelimit import Quota, RateLimiter

    nc = await nats.connect(platform.nats_url)
    try:
        js = nc.jetstream()
        created = await KeyAdmin(js).create_key(
            "gw-replicas", limits=Limits(requests_per_minute=120)
        )
        kv = await js.key_value(RATE_LIMITS_BUCKET)
        replicas = [RateLimiter(kv), RateLimiter(kv)]
        quota = Quota(created.record.key_id, "key", created.record.limits)
        refusals = await asyncio.gather(*(replicas[i % 2].admit(quota) for i in range(300)))
    finally:
        await nc.close()
    admitted = sum(r is None for r in refusals)
    # Leased slices (120 / 50 = 2 per lease) never over-admit; at most one slice per replica idles.
    assert 120 - 2 * 2 <= admitted <= 120, admitted


async def test_exact_and_semantic_cache_hits_and_their_switches(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    first = await gateway.ChatOnce(ask(QUESTION), metadata=falcon.metadata, timeout=TIMEOUT)
    assert first.final.cache == gateway_pb2.CACHE_STATUS_MISS
    again = await gateway.ChatOnce(ask(QUESTION), metadata=falcon.metadata, timeout=TIMEOUT)
    assert again.final.cache == gateway_pb2.CACHE_STATUS_EXACT_HIT
    assert again.text == first.text
    assert [c.chunk_id for c in again.final.citations] == [
        c.chunk_id for c in first.final.citations
    ]
    assert again.final.usage.output_tokens == 0  # no model ran

    await stored_in_the_semantic_cache(platform, falcon, ask(QUESTION))
    paraphrase = "On which port does Falcon listen for admin requests?"
    similar = await gateway.ChatOnce(ask(paraphrase), metadata=falcon.metadata, timeout=TIMEOUT)
    assert similar.final.cache == gateway_pb2.CACHE_STATUS_SEMANTIC_HIT
    assert similar.text == first.text

    off = ask(QUESTION, no_cache=True)
    bypass = await gateway.ChatOnce(off, metadata=falcon.metadata, timeout=TIMEOUT)
    assert bypass.final.cache == gateway_pb2.CACHE_STATUS_BYPASS
    assert bypass.final.usage.output_tokens > 0

    result = platform.cli("tenants", "set", falcon.name, "--no-exact-cache", "--no-semantic-cache")
    assert result.returncode == 0, result.stderr
    assert "exact cache off, semantic cache off" in result.stdout
    for _ in range(100):
        reply = await gateway.ChatOnce(ask(QUESTION), metadata=falcon.metadata, timeout=TIMEOUT)
        if reply.final.cache == gateway_pb2.CACHE_STATUS_BYPASS:
            break
        await asyncio.sleep(0.05)
    assert reply.final.cache == gateway_pb2.CACHE_STATUS_BYPASS


async def stored_in_the_semantic_cache(
    platform: Platform, tenant: Tenant, request: gateway_pb2.ChatRequest
) -> None:
    """Wait until the gateway's background StoreAnswer of `request` landed in retrieval."""
    nc = await nats.connect(platform.nats_url)
    try:  # the scope names the prompt version by its content digest
        prompt = await (await PromptStore.open(nc.jetstream())).get(tenant.name, "default")
    finally:
        await nc.close()
    lookup = retrieval_pb2.LookupAnswerRequest(
        tenant=tenant.name,
        scope=semantic_scope(request, prompt.digest),
        question=request.messages[-1].content,
    )
    async with channel(platform.addr("retrieval")) as ch:
        stub = retrieval_pb2_grpc.RetrievalStub(ch)
        for _ in range(100):
            if (await stub.LookupAnswer(lookup, timeout=TIMEOUT)).hit:
                return
            await asyncio.sleep(0.05)
    pytest.fail("the answer never reached the semantic cache")


async def test_one_interaction_event_per_request_with_redacted_text(
    platform: Platform, gateway: gateway_pb2_grpc.GatewayStub, falcon: Tenant
) -> None:
    question = "Which port does Falcon listen on? Reply to jane.doe@example.com"
    _, final, _ = await chat(gateway, falcon, ask(question, no_cache=True))
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.ChatOnce(ask(QUESTION, prompt="nope"), metadata=falcon.metadata)
    async with interaction_events(platform) as events:
        # new_tenant's probe, the chat, the failed call
        probe, ok, failed = await events.for_key(falcon.key_id, 3)
    assert probe.status == "NOT_FOUND"
    assert ok.status == "OK" and ok.error == ""
    assert ok.tenant == falcon.name and ok.key_id == falcon.key_id
    assert ok.api == "grpc.chat" and ok.streamed
    assert ok.trace_id == final.trace_id and ok.request_id == final.request_id
    assert ok.model_used == ANSWERER and ok.model_requested == ""
    assert ok.usage == final.usage
    assert [c.chunk_id for c in ok.citations] == [c.chunk_id for c in final.citations]
    assert ok.cache == gateway_pb2.CACHE_STATUS_BYPASS
    assert ok.time_to_first_token_ms > 0 and ok.total_ms >= ok.overhead_ms > 0
    assert {s.step for s in ok.steps} >= {"retrieval", "inference"}
    assert ok.text_retention == events_pb2.TEXT_RETENTION_REDACTED
    # The default guardrail policy redacted it before the model saw it (<EMAIL_1>).
    assert "jane.doe" not in ok.question and "<EMAIL_1>" in ok.question
    assert "7341" in ok.answer
    assert failed.status == "NOT_FOUND" and "unknown prompt" in failed.error
    assert failed.api == "grpc.chat_once" and not failed.streamed


def test_llmops_chat_streams_an_answer_with_citations(platform: Platform) -> None:
    ingested = platform.cli("ingest", "tests/data/docs", "--tenant", "cli-chat", "--wait")
    assert ingested.returncode == 0, ingested.stderr
    result = platform.cli("chat", "What does error E-417 mean?", "--tenant", "cli-chat")
    assert result.returncode == 0, result.stderr
    assert "E-417" in result.stdout
    assert re.search(r"\[\d\] tests/data/docs/aurora-heat-pump.txt", result.stderr), result.stderr
    assert "triton/extractive_answerer" in result.stderr
    assert re.search(r"tokens \d+ in / \d+ out", result.stderr), result.stderr
    assert (platform.data_dir / "keys" / "cli-chat").stat().st_mode & 0o077 == 0


async def test_llmops_keys_create_prints_a_key_once_and_stores_only_its_hash(
    platform: Platform,
) -> None:
    created = platform.cli("keys", "create", "--tenant", "cli-keys", "--rpm", "10")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"llmops-[0-9a-f]{12}-[A-Za-z0-9_-]{43}", key), key
    listed = platform.cli("keys", "list", "--tenant", "cli-keys")
    assert key.split("-")[1] in listed.stdout and "10" in listed.stdout
    assert key.split("-", 2)[2] not in listed.stdout
    bad = platform.cli("keys", "create", "--tenant", "Bad Tenant!")
    assert bad.returncode != 0 and "invalid tenant" in bad.stderr
    nc = await nats.connect(platform.nats_url)
    try:
        kv = await nc.jetstream().key_value(API_KEYS_BUCKET)
        stored = (await kv.get(key.split("-")[1])).value or b""
    finally:
        await nc.close()
    secret = key.split("-", 2)[2]
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
