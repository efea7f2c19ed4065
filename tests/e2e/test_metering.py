"""Metering on the whole platform: a reply's cost, spend, a budget that refuses, reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path

import grpc
import nats
import openai
import pytest
import yaml
from nats.js.errors import KeyNotFoundError

from llmops.bus.topology import SPEND_BUCKET
from llmops.grpcutil import channel
from llmops.spend import Spend, period_start, spend_key
from llmops.v1 import gateway_pb2_grpc
from tests.e2e.gateway_support import Tenant, ask, interaction_events, new_tenant, openai_client
from tests.support import ROOT, Platform

QUESTION = "Which port does Falcon listen on for admin requests?"


def _price(model: str) -> tuple[Decimal, Decimal]:
    """The default table's input and output price per million tokens of `model`."""
    table = yaml.safe_load((ROOT / "deploy" / "metering" / "prices.yaml").read_text())
    [entry] = [p for p in table["prices"] if p["model"] == model]
    return Decimal(entry["input_per_mtok"]), Decimal(entry["output_per_mtok"])


def _nanos(model: str, input_tokens: int, output_tokens: int) -> int:
    per_in, per_out = _price(model)
    return int((input_tokens * per_in + output_tokens * per_out) * 1000)  # $/M tokens -> nanos


def _cli(platform: Platform, *args: str) -> str:
    result = platform.cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


async def _ask(tenant: Tenant, platform: Platform) -> object:
    async with channel(platform.addr("gateway")) as ch:
        return await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
            ask(QUESTION, no_cache=True), metadata=tenant.metadata, timeout=60
        )


async def test_a_reply_and_its_event_carry_the_cost_from_the_price_table(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    reply = await _ask(tenant, platform)
    final = reply.final  # type: ignore[attr-defined]
    usage = final.usage
    assert final.cost.priced and final.cost.currency == "USD"
    assert final.cost.nanos == _nanos(final.model_used, usage.input_tokens, usage.output_tokens)
    assert final.cost.price_version.startswith(f"{final.model_used}@")
    async with channel(platform.addr("gateway")) as ch:  # streamed: priced the same way
        call = gateway_pb2_grpc.GatewayStub(ch).Chat(
            ask(QUESTION, no_cache=True), metadata=tenant.metadata, timeout=60
        )
        streamed = [r async for r in call][-1].final
    assert streamed.cost.nanos == _nanos(
        streamed.model_used, streamed.usage.input_tokens, streamed.usage.output_tokens
    )
    async with interaction_events(platform) as events:
        answered = [e for e in await events.for_key(tenant.key_id, 3) if e.status == "OK"]
    assert answered[0].cost == final.cost

    client = openai_client(platform, tenant.key)
    completion = await client.chat.completions.create(
        model="answerer",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"llmops": {"cache": {"no_exact": True, "no_semantic": True}}},
    )
    assert completion.usage is not None
    extra = completion.usage.model_extra or {}
    expected = _nanos(
        completion.model, completion.usage.prompt_tokens, completion.usage.completion_tokens
    )
    assert extra["cost_details"]["nanos"] == expected
    assert extra["cost"] == pytest.approx(expected / 1e9)
    vectors = await client.embeddings.create(model="all-MiniLM-L6-v2", input=[QUESTION] * 3)
    per_in, _ = _price("embedding/all-MiniLM-L6-v2")
    cost = (vectors.usage.model_extra or {})["cost"]
    assert cost == pytest.approx(float(vectors.usage.prompt_tokens * per_in / 10**6))
    await client.close()


async def _wait_usage(platform: Platform, tenant: str, requests: int) -> str:
    deadline = time.monotonic() + 30
    while True:
        out = _cli(platform, "usage", "--tenant", tenant)
        if f"│ {requests}" in out or time.monotonic() > deadline:
            return out
        await asyncio.sleep(0.3)


async def test_a_spent_budget_refuses_the_next_request_and_spend_reconciles(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    one = _nanos("triton/extractive_answerer", 1, 1)  # a floor: requests cost far more
    _cli(platform, "budget", "set", "--tenant", tenant.name, "--daily", str(Decimal(one) / 10**9))
    await asyncio.sleep(0.5)  # the gateways' budget watch
    await _ask(tenant, platform)  # nothing spent yet: admitted, and it passes the limit
    await _wait_usage(platform, tenant.name, 1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _ask(tenant, platform)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"daily budget of tenant {tenant.name}" in str(refused.value.details())
    client = openai_client(platform, tenant.key)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(
            model="answerer", messages=[{"role": "user", "content": QUESTION}]
        )
    assert "budget" in str(limited.value) and limited.value.response.headers["retry-after"]
    await client.close()

    deadline = time.monotonic() + 30
    while True:  # analytics stores the usage event a moment after metering counts it
        out = _cli(platform, "usage", "--tenant", tenant.name, "--reconcile")
        if "agree" in out or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert "reconciled: NATS KV and ClickHouse agree" in out, out


def test_prices_import_reads_litellm_and_never_rewrites_history(platform: Platform) -> None:
    sample = ROOT / "tests" / "data" / "litellm_prices_sample.json"
    out = _cli(platform, "prices", "import", str(sample))
    assert "skipped" in out and "the table now holds" in out
    listed = platform.cli("prices", "list", "--model", "azure/gpt-4o", "--json")
    [azure] = json.loads(listed.stdout)
    assert azure["model"] == "azure/gpt-4o" and "LiteLLM" in azure["source"]
    assert (azure["input_per_mtok"], azure["cached_input_per_mtok"]) == ("2.5", "1.25")
    again = platform.cli(
        "prices", "import", str(sample), "--effective", "2020-01-01T00:00:00+00:00"
    )
    assert again.returncode != 0 and "history" in again.stderr


async def test_two_gateway_replicas_hold_a_budget_to_one_request_each(
    platform: Platform, tmp_path: Path
) -> None:
    """Two gateways, eight concurrent callers, one budget: the spend passes the limit by at most
    one request per replica."""
    tenant = await new_tenant(platform)
    first = await _ask(tenant, platform)  # what one request of this tenant costs
    cost = first.final.cost.nanos  # type: ignore[attr-defined]
    spent = int(await _counted(platform, tenant.name, 1))
    limit = spent + 12 * cost
    _cli(platform, "budget", "set", "--tenant", tenant.name, "--daily", str(Decimal(limit) / 10**9))
    second = platform.another_gateway(tmp_path)
    second.start()
    try:
        await second.wait_healthy()
        refused = 0

        async def caller(address: str) -> None:
            nonlocal refused
            async with channel(address) as ch:
                stub = gateway_pb2_grpc.GatewayStub(ch)
                for _ in range(20):
                    try:
                        await stub.ChatOnce(
                            ask(QUESTION, no_cache=True), metadata=tenant.metadata, timeout=60
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                        refused += 1
                        return

        addresses = [platform.addr("gateway"), second.addr] * 4
        await asyncio.gather(*(caller(a) for a in addresses))
    finally:
        second.stop()
        await second.close()
    assert refused == 8  # every caller was stopped by the budget
    total = await _settled(platform, tenant.name)
    assert limit <= total <= limit + 2 * cost, (limit, total, cost)


async def _counted(platform: Platform, tenant: str, requests: int) -> float:
    """The tenant's spend today in nanos, once metering counted `requests` requests."""
    nc = await nats.connect(platform.nats_url)
    try:
        kv = await nc.jetstream().key_value(SPEND_BUCKET)
        key = spend_key(tenant, "", "day", period_start("day", dt.datetime.now(dt.UTC)))
        for _ in range(300):
            with contextlib.suppress(KeyNotFoundError):
                spend = Spend.model_validate_json((await kv.get(key)).value or b"{}")
                if spend.requests >= requests:
                    return spend.spend.get("USD", 0)
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    raise AssertionError(f"metering never counted {requests} requests of {tenant}")


async def _settled(platform: Platform, tenant: str) -> int:
    """The tenant's spend once metering has counted everything (it stopped changing)."""
    last, same = -1.0, 0
    while same < 10:
        now = await _counted(platform, tenant, 1)
        same = same + 1 if now == last else 0
        last = now
        await asyncio.sleep(0.1)
    return int(last)
