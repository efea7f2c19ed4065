"""Helpers of the gateway e2e tests: fresh tenants with keys, documents, events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import nats
import openai
from nats.js.api import ConsumerConfig, DeliverPolicy

from llmops.apikeys import KeyAdmin, Limits, parse_key
from llmops.bus.topology import EVENTS_STREAM, INTERACTION_EVENTS
from llmops.docclient import DocumentClient
from llmops.grpcutil import channel
from llmops.v1 import documents_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc, inference_pb2
from tests.support import Platform

TIMEOUT = 30.0
INPUT_ONLY = "input-only"  # the baseline policy of tests/e2e/conftest.py's `input_only`
FACT_DOC = (
    "# Falcon release notes\n\n"
    "The Falcon service stores its cache in /var/lib/falcon/cache by default. "
    "Falcon listens on port 7341 for admin requests. "
    "Rotating the Falcon signing key requires running falcon-rotate with the --force flag.\n"
)


@dataclass
class Tenant:
    name: str
    key: str

    @property
    def key_id(self) -> str:
        parsed = parse_key(self.key)
        assert parsed is not None
        return parsed[0]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.key}"),)


async def new_tenant(platform: Platform, limits: Limits | None = None) -> Tenant:
    """A tenant of its own with a fresh key, once the gateway knows the key."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(platform.nats_servers)
    try:
        created = await KeyAdmin(nc.jetstream()).create_key(name, "e2e", limits)
    finally:
        await nc.close()
    tenant = Tenant(name, created.key)
    async with channel(platform.addr("gateway")) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        probe = ask("?", retrieval_off=True, no_cache=True)
        probe.prompt = "no-such-prompt"  # NOT_FOUND once authenticated: costs no model call
        for _ in range(100):
            try:
                await stub.ChatOnce(probe, metadata=tenant.metadata, timeout=TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAUTHENTICATED:
                    return tenant
            await asyncio.sleep(0.05)
    raise TimeoutError("the gateway never accepted the new key")


def ask(
    question: str, *, retrieval_off: bool = False, no_cache: bool = False, **fields: object
) -> gateway_pb2.ChatRequest:
    return gateway_pb2.ChatRequest(
        messages=[inference_pb2.ChatMessage(role="user", content=question)],
        retrieval=gateway_pb2.RetrievalOptions(disabled=retrieval_off),
        cache=gateway_pb2.CacheOptions(no_exact=no_cache, no_semantic=no_cache),
        **fields,  # type: ignore[arg-type]
    )


async def ingest(platform: Platform, tenant: str, doc_id: str, text: str) -> None:
    client = await DocumentClient.connect(platform.nats_url)
    try:
        await client.watch()
        await client.publish(
            documents_pb2.Document(
                tenant=tenant,
                doc_id=doc_id,
                source=f"{doc_id}.md",
                content=text.encode(),
                format=documents_pb2.DOCUMENT_FORMAT_MARKDOWN,
            )
        )
        outcome = await client.wait_for([(tenant, doc_id)], timeout_s=60)
        assert outcome[(tenant, doc_id)].status == events_pb2.DOCUMENT_STATUS_INDEXED
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def interaction_events(platform: Platform) -> AsyncIterator[EventReader]:
    """Read interaction events from JetStream (an ephemeral consumer over the events stream)."""
    nc = await nats.connect(platform.nats_url)
    try:
        yield EventReader(nc)
    finally:
        await nc.close()


class EventReader:
    def __init__(self, nc: nats.NATS) -> None:
        self._js = nc.jetstream()

    async def for_key(
        self, key_id: str, count: int, timeout_s: float = 15.0
    ) -> list[events_pb2.InteractionEvent]:
        """The first `count` interaction events of one key, waiting for them to arrive."""
        sub = await self._js.pull_subscribe(
            INTERACTION_EVENTS,
            stream=EVENTS_STREAM.name,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        found: list[events_pb2.InteractionEvent] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while len(found) < count and loop.time() < deadline:
                with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                    for msg in await sub.fetch(500, timeout=1):
                        event = events_pb2.InteractionEvent.FromString(msg.data)
                        if event.key_id == key_id:
                            found.append(event)
        finally:
            await sub.unsubscribe()
        assert len(found) >= count, f"{len(found)} of {count} events of key {key_id}"
        return found


def openai_client(platform: Platform, key: str) -> openai.AsyncOpenAI:
    """The official SDK on the gateway's HTTP API; no retries, which would hide 429s and 5xx."""
    return openai.AsyncOpenAI(
        base_url=platform.http_base_url,
        api_key=key,
        max_retries=0,
        http_client=httpx.AsyncClient(trust_env=False),
    )
