"""The prompt registry and feedback through the gateway of a whole platform.

Prompts are pushed to the registry the running gateway watches: variables, labels,
A/B splits and rollbacks take effect without a restart; feedback joins its interaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import nats
import openai
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from gateway.feedback import FeedbackDesk, RecentInteractions
from llmops.apikeys import KeyAdmin
from llmops.bus.topology import EVENTS_STREAM, FEEDBACK_EVENTS
from llmops.grpcutil import channel, lazy_stub
from llmops.prompts.store import PromptStore
from llmops.v1 import (
    analytics_pb2_grpc,
    events_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    prompts_pb2,
    prompts_pb2_grpc,
)
from tests.e2e.gateway_support import Tenant, ask, interaction_events, new_tenant, openai_client
from tests.support import Platform

TIMEOUT = 60.0
GREETING = """\
prompts:
  - name: greet
    description: answers in a given tone
    defaults: {tone: plain}
    system: "Answer in a {tone} tone, for {audience}."
    user: "{question}"
"""


@contextlib.asynccontextmanager
async def _store(platform: Platform) -> AsyncIterator[PromptStore]:
    nc = await nats.connect(platform.nats_url)
    try:
        yield await PromptStore.open(nc.jetstream())
    finally:
        await nc.close()


async def _chat(
    platform: Platform, tenant: Tenant, request: gateway_pb2.ChatRequest
) -> gateway_pb2.ChatReply:
    async with channel(platform.addr("gateway")) as ch:
        reply: gateway_pb2.ChatReply = await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
            request, metadata=tenant.metadata, timeout=TIMEOUT
        )
        return reply


def _greet(user: str = "", **fields: object) -> gateway_pb2.ChatRequest:
    request = ask("Say hello.", retrieval_off=True, no_cache=True, prompt="greet", **fields)
    request.variables["audience"] = "operators"
    request.user = user
    return request


async def _until(check: object, timeout_s: float = 5.0) -> None:
    """Retry `check` (an async callable) until it stops raising AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await check()  # type: ignore[operator]
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def test_a_pushed_prompt_serves_with_its_variables_and_records_its_version(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    async with _store(platform) as store:
        await store.push_text(GREETING, tenant.name, by="e2e")

    async def served() -> None:
        reply = await _chat(platform, tenant, _greet())
        assert (reply.final.prompt, reply.final.prompt_version) == ("greet", "1")
        assert reply.final.prompt_label == "production" and reply.final.prompt_arm == ""

    await _until(served)
    missing = _greet()
    del missing.variables["audience"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(platform, tenant, missing)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "audience" in (raised.value.details() or "")
    unknown = _greet()
    unknown.variables["tonne"] = "x"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(platform, tenant, unknown)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tonne" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(platform, tenant, _greet(prompt_version="9"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(platform, tenant, _greet(prompt_label="nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    # Another tenant gets the baseline's prompts, not this tenant's.
    other = await new_tenant(platform)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _chat(platform, other, _greet())
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_openai_api_names_a_label_and_variables(platform: Platform) -> None:
    tenant = await new_tenant(platform)
    staged = GREETING.replace("a {tone} tone", "a {tone} voice") + "    labels: [staging]\n"
    async with _store(platform) as store:
        await store.push_text(GREETING, tenant.name, by="e2e")
        await store.push_text(staged, tenant.name, by="e2e")
    api = openai_client(platform, tenant.key)
    body = {
        "llmops": {
            "prompt": "greet",
            "prompt_label": "staging",
            "variables": {"audience": "pilots"},
            "retrieval": {"disabled": True},
            "cache": {"no_exact": True, "no_semantic": True},
        }
    }

    async def staged_version() -> None:
        reply = await api.chat.completions.create(
            model="answerer",
            messages=[{"role": "user", "content": "Hi"}],
            extra_body=body,
            user="u1",
        )
        extras = (reply.model_extra or {})["llmops"]
        assert (extras["prompt"], extras["prompt_version"]) == ("greet", "2")
        assert extras["prompt_label"] == "staging"

    await _until(staged_version)
    del body["llmops"]["variables"]  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="audience"):
        await api.chat.completions.create(
            model="answerer", messages=[{"role": "user", "content": "Hi"}], extra_body=body
        )


async def test_a_split_label_is_sticky_per_user_and_a_rollback_is_live(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    async with _store(platform) as store:
        await store.push_text(GREETING, tenant.name, by="e2e")
        await store.push_text(
            GREETING.replace("a {tone} tone", "a {tone} voice"), tenant.name, "e2e"
        )
        await store.split(tenant.name, "greet", "production", {1: 50, 2: 50}, by="e2e")

        async def split() -> None:
            reply = await _chat(platform, tenant, _greet(user="user-0"))
            assert reply.final.prompt_arm in ("v1", "v2")

        await _until(split)
        arms: dict[str, str] = {}
        for i in range(24):
            reply = await _chat(platform, tenant, _greet(user=f"user-{i}"))
            arms[f"user-{i}"] = reply.final.prompt_arm
            assert reply.final.prompt_version == reply.final.prompt_arm.removeprefix("v")
        assert set(arms.values()) == {"v1", "v2"}, arms  # 24 users, both arms (p fail ~1e-7)
        for user in ("user-1", "user-2", "user-3"):
            again = await _chat(platform, tenant, _greet(user=user))
            assert again.final.prompt_arm == arms[user]

        async with interaction_events(platform) as events:
            recorded = await events.for_key(tenant.key_id, 10)
        split_events = [e for e in recorded if e.prompt_arm]
        assert split_events and all(e.prompt == "greet" for e in split_events)
        assert all(e.prompt_version == e.prompt_arm.removeprefix("v") for e in split_events)

        await store.rollback(tenant.name, "greet", "production", by="e2e")

        async def rolled_back() -> None:
            reply = await _chat(platform, tenant, _greet(user="user-0"))
            assert reply.final.prompt_version == "1" and reply.final.prompt_arm == ""

        await _until(rolled_back)


async def test_the_admin_api_is_tenant_scoped_and_needs_a_prompt_admin_key(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    nc = await nats.connect(platform.nats_url)
    try:
        admin = await KeyAdmin(nc.jetstream()).create_key(tenant.name, "admin", prompt_admin=True)
    finally:
        await nc.close()
    admin_metadata = (("authorization", f"Bearer {admin.key}"),)
    async with channel(platform.addr("gateway")) as ch:
        registry = prompts_pb2_grpc.PromptRegistryStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await registry.Push(
                prompts_pb2.PushPromptsRequest(yaml=GREETING), metadata=tenant.metadata
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for _ in range(100):  # until the gateway knows the new key
            try:
                pushed = await registry.Push(
                    prompts_pb2.PushPromptsRequest(yaml=GREETING), metadata=admin_metadata
                )
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                await asyncio.sleep(0.05)
        assert [(p.name, p.version, p.created) for p in pushed.prompts] == [("greet", 1, True)]
        listed = await registry.List(prompts_pb2.ListPromptsRequest(), metadata=tenant.metadata)
        own = {p.name for p in listed.prompts if p.tenant == tenant.name}
        assert own == {"greet"}
        other = await new_tenant(platform)
        theirs = await registry.List(prompts_pb2.ListPromptsRequest(), metadata=other.metadata)
        assert "greet" not in {p.name for p in theirs.prompts}


async def _feedback_events(js: JetStreamContext, request_id: str) -> list[events_pb2.FeedbackEvent]:
    sub = await js.pull_subscribe(
        FEEDBACK_EVENTS,
        stream=EVENTS_STREAM.name,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    found: list[events_pb2.FeedbackEvent] = []
    try:
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            while True:
                for msg in await sub.fetch(500, timeout=1):
                    event = events_pb2.FeedbackEvent.FromString(msg.data)
                    if event.request_id == request_id:
                        found.append(event)
    finally:
        await sub.unsubscribe()
    return found


async def test_feedback_is_tenant_scoped_idempotent_and_joins_its_interaction(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    stranger = await new_tenant(platform)
    reply = await _chat(platform, tenant, ask("Hello?", retrieval_off=True, no_cache=True))
    request_id = reply.final.request_id
    async with channel(platform.addr("gateway")) as ch:
        gateway = gateway_pb2_grpc.GatewayStub(ch)
        up = gateway_pb2.FeedbackRequest(
            request_id=request_id, thumbs=gateway_pb2.THUMBS_UP, comment="mail a@b.example"
        )
        first = await gateway.Feedback(up, metadata=tenant.metadata, timeout=TIMEOUT)
        again = await gateway.Feedback(up, metadata=tenant.metadata, timeout=TIMEOUT)
        assert first.event_id == again.event_id and first.request_id == request_id
        by_trace = await gateway.Feedback(
            gateway_pb2.FeedbackRequest(trace_id=reply.final.trace_id, score=4, source="reviewer"),
            metadata=tenant.metadata,
            timeout=TIMEOUT,
        )
        assert by_trace.request_id == request_id and by_trace.event_id != first.event_id
        for bad, code in (
            (gateway_pb2.FeedbackRequest(request_id=request_id), "INVALID_ARGUMENT"),
            (gateway_pb2.FeedbackRequest(thumbs=gateway_pb2.THUMBS_UP), "INVALID_ARGUMENT"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await gateway.Feedback(bad, metadata=tenant.metadata, timeout=TIMEOUT)
            assert raised.value.code().name == code
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # another tenant's request
            await gateway.Feedback(up, metadata=stranger.metadata, timeout=TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    async with httpx.AsyncClient(base_url=platform.http_base_url + "/", trust_env=False) as http:
        posted = await http.post(
            "feedback",
            json={"request_id": request_id, "thumbs": "down", "user": "u-7"},
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        assert posted.status_code == 200, posted.text
        unknown = await http.post(
            "feedback",
            json={"request_id": uuid.uuid4().hex, "thumbs": "up"},
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        assert unknown.status_code == 404, unknown.text

    nc = await nats.connect(platform.nats_url)
    try:
        events = await _feedback_events(nc.jetstream(), request_id)
    finally:
        await nc.close()
    assert {e.thumbs for e in events} == {1, 0, -1}
    assert len({e.event_id for e in events}) == 3  # the repeated thumbs-up is one judgement
    assert all(e.time.ToMilliseconds() == events[0].time.ToMilliseconds() for e in events)
    kept = next(e for e in events if e.thumbs == 1)
    assert kept.comment == "mail <EMAIL>"  # user text kept per LLMOPS_EVENT_TEXT (redacted)

    joined = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = platform.cli(
            "sql",
            "SELECT count() AS judgements, sum(f.thumbs = 1) AS ups FROM feedback AS f FINAL "
            f"INNER JOIN interactions AS i ON i.tenant = f.tenant AND i.request_id = f.request_id "
            f"WHERE f.tenant = '{tenant.name}'",
            "--format",
            "csv",
        )
        joined = result.stdout
        if joined.strip().splitlines()[-1] == "3,1":
            break
        await asyncio.sleep(0.5)
    assert joined.strip().splitlines()[-1] == "3,1", joined


async def test_feedback_finds_an_interaction_another_replica_served(platform: Platform) -> None:
    """A replica that did not serve the request looks it up in ClickHouse, with the caller's key."""
    tenant = await new_tenant(platform)
    reply = await _chat(platform, tenant, ask("Hi?", retrieval_off=True, no_cache=True))
    nc = await nats.connect(platform.nats_url)
    try:
        desk = FeedbackDesk(
            nc.jetstream,
            lazy_stub(analytics_pb2_grpc.AnalyticsStub, platform.addr("analytics")),
            RecentInteractions(),  # knows nothing: the lookup must go to ClickHouse
            "redacted",
            lookup_s=30.0,
        )
        key = (await KeyAdmin(nc.jetstream()).list_keys(tenant.name))[0]
        given = await desk.give(
            key,
            f"Bearer {tenant.key}",
            gateway_pb2.FeedbackRequest(request_id=reply.final.request_id, thumbs=2),
        )
        assert given.request_id == reply.final.request_id
    finally:
        await nc.close()
