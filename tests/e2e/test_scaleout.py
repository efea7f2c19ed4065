"""A cluster on one machine under faults: `llmops up --cluster`, nodes and replicas killed mid-load.

Three NATS nodes (R3 streams and buckets) and two processes of every service
(tests/support.run_platform with cluster=True). While documents are ingested
and chat requests run at a steady rate: kill -9 one NATS node, then one
replica of every service, then SIGSTOP a node for longer than its peers'
heartbeat; the supervisor restarts what was killed. Afterwards nothing is
lost or doubled: every document is searchable exactly once on each
retrieval replica, each answered request has one interaction row and one
usage row, the rollup agrees with the raw rows, spend in KV equals the usage
rows, and a budget is passed by at most one request per gateway replica.
Then a rolling restart of every service, one replica at a time, fails no
request.

Chat goes to a local OpenAI-compatible mock through the inference service
(`LLMOPS_ROUTING=remote`), so both replicas of every service on the chat path
are exercised; Triton is off (it would only slow the 2-core machine down).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from llmops.grpcutil import channel
from llmops.v1 import gateway_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.cluster import (
    COLLECTION,
    DEADLINE_S,
    Load,
    caller,
    publish_docs,
    rolling_restart,
    run_faults,
    until,
)
from tests.e2e.gateway_support import Tenant, ask, new_tenant
from tests.inference.openai_mock import serve
from tests.support import Platform, run_platform

ROUTES = """\
default: answerer
aliases:
  answerer:
    - {{provider: openai, model: gpt-4o-mini, base_url: "{mock}", timeout_s: 5}}
"""
DOCS = 24


def _sql(platform: Platform, query: str) -> list[dict[str, object]]:
    for _ in range(20):  # a JetStream leader still being elected fails the CLI's key look-up
        result = platform.cli("sql", query, "--format", "json")
        if result.returncode == 0:
            break
        time.sleep(0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


async def _indexed_on_each_replica(platform: Platform, tenant: str, docs: list[str]) -> None:
    """Each retrieval replica holds every document's one chunk, exactly once."""
    for name, address in platform.components().items():
        if not name.startswith("retrieval-"):
            continue

        async def complete(name: str = name, address: str = address) -> bool:
            async with channel(address) as ch:
                reply = await retrieval_pb2_grpc.RetrievalStub(ch).Search(
                    retrieval_pb2.SearchRequest(
                        tenant=tenant,
                        query="scaleout code part",
                        top_k=1000,
                        collection=COLLECTION,
                        mode=retrieval_pb2.SEARCH_MODE_SPARSE,
                    ),
                    timeout=10,
                )
            per_doc = Counter(h.doc_id for h in reply.hits)
            chunks = [h.chunk_id for h in reply.hits]
            assert len(chunks) == len(set(chunks)), f"{name}: a chunk twice"
            assert all(c == 1 for c in per_doc.values()), f"{name}: {per_doc}"
            return set(per_doc) == set(docs)

        await until(complete, 60, f"every document on {name}")


@pytest.mark.timeout(600)  # ~2.5 min alone on 2 cores: a cluster start, three faults, a roll
async def test_a_cluster_under_faults_loses_nothing_and_rolls_without_a_failure(
    tmp_path: Path,
) -> None:
    async with serve(
        ["The ", "mock ", "answered."], usage={"prompt_tokens": 40, "completion_tokens": 8}
    ) as mock:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(mock=mock.base_url))
        extra = {"LLMOPS_ROUTES_FILE": str(routes), "LLMOPS_ROUTING": "remote"}
        with run_platform(
            tmp_path / "data", triton=False, extra_env=extra, cluster=True
        ) as platform:
            await _faults(platform)
            await _rolling_restart(platform)


async def _faults(platform: Platform) -> None:
    chat, budgeted = await new_tenant(platform), await new_tenant(platform)
    docs_tenant = f"docs-{uuid.uuid4().hex[:6]}"
    one = await _cost_of_one(platform, budgeted)
    limit = one * 40
    out = platform.cli(
        "budget", "set", "--tenant", budgeted.name, "--daily", str(Decimal(limit) / 10**9)
    )
    assert out.returncode == 0, out.stderr
    await asyncio.sleep(1.0)  # the gateways' budget watch

    load, budget_load = Load(), Load()
    stop = asyncio.Event()
    async with channel(platform.addr("gateway")) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        callers = [asyncio.create_task(caller(stub, chat, load, stop)) for _ in range(4)]
        callers += [
            asyncio.create_task(caller(stub, budgeted, budget_load, stop, budgeted=True))
            for _ in range(2)
        ]
        publishing = asyncio.create_task(publish_docs(platform, docs_tenant, DOCS))
        try:
            await asyncio.sleep(3)
            recovered = await run_faults(platform)
            docs = await publishing
            await asyncio.sleep(2)
        finally:
            stop.set()
            await asyncio.gather(*callers)
    print(f"faults: {load.summary()}; recovered {recovered}")

    assert load.answered, "no request answered"
    assert set(load.refused) <= {"UNAVAILABLE"}, load.refused  # retriable, never a hang
    assert load.slowest_s < DEADLINE_S + 1
    assert sum(load.refused.values()) < len(load.answered) / 10, load.refused
    assert budget_load.budget_refusals > 0, "the budget never refused"

    await _indexed_on_each_replica(platform, docs_tenant, docs)
    await _one_row_each(platform, chat.name, load.answered)
    await _one_row_each(platform, budgeted.name, budget_load.answered)
    _rollup_agrees(platform, chat.name)
    _spend_reconciles(platform, chat.name)
    spent = _spend_reconciles(platform, budgeted.name)
    # One request per gateway replica, and one more for the gateway that was killed.
    assert spent <= limit + 3 * one, (spent, limit, one)


async def _cost_of_one(platform: Platform, tenant: Tenant) -> int:
    async with channel(platform.addr("gateway")) as ch:
        reply = await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
            ask("How much?", retrieval_off=True, no_cache=True),
            metadata=tenant.metadata,
            timeout=30,
        )
    nanos = int(reply.final.cost.nanos)
    assert nanos > 0, reply.final
    return nanos


async def _one_row_each(platform: Platform, tenant: str, answered: list[str]) -> None:
    """One interaction row and one usage row per answered request, and no request twice."""
    want = Counter(answered)
    assert max(want.values()) == 1

    async def stored() -> bool:
        rows = {}
        for table in ("interactions", "usage"):
            found = _sql(
                platform,
                f"SELECT request_id, count() AS n FROM {table} WHERE tenant = '{tenant}' "
                "GROUP BY request_id",
            )
            counts = {str(r["request_id"]): int(str(r["n"])) for r in found}
            assert all(n == 1 for n in counts.values()), f"{table}: a request twice"
            rows[table] = counts
        return all(set(want) <= set(rows[t]) for t in rows)

    await until(stored, 60, "every answered request in ClickHouse")


def _rollup_agrees(platform: Platform, tenant: str) -> None:
    [raw] = _sql(
        platform,
        f"SELECT count() AS n, toString(sum(cost)) AS c FROM usage WHERE tenant = '{tenant}'",
    )
    [rolled] = _sql(
        platform,
        "SELECT sum(requests) AS n, toString(sum(cost)) AS c FROM usage_daily "
        f"WHERE tenant = '{tenant}'",
    )
    assert (int(str(raw["n"])), Decimal(str(raw["c"]))) == (
        int(str(rolled["n"])),
        Decimal(str(rolled["c"])),
    ), (raw, rolled)


def _spend_reconciles(platform: Platform, tenant: str) -> int:
    """Spend in KV equals the usage rows (`llmops usage --reconcile`); the spend in nanos."""
    deadline = time.monotonic() + 30
    while True:
        out = platform.cli("usage", "--tenant", tenant, "--reconcile", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        usage = json.loads(out.stdout)
        if usage["agree"] and usage["lines"]:
            break
        assert time.monotonic() < deadline, usage
        time.sleep(0.5)
    [line] = [x for x in usage["lines"] if not x["key_id"]]
    return int(line["spend_nanos"])


async def _rolling_restart(platform: Platform) -> None:
    """Every service, one replica at a time: no request fails."""
    tenant = await new_tenant(platform)
    load = Load()
    stop = asyncio.Event()
    async with channel(platform.addr("gateway")) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        callers = [asyncio.create_task(caller(stub, tenant, load, stop)) for _ in range(4)]
        try:
            took = await rolling_restart(platform)
        finally:
            stop.set()
            await asyncio.gather(*callers)
    print(f"rolling restart in {took:.1f} s: {load.summary()}")
    assert len(load.answered) > 50
    assert not load.refused, load.refused
    await _one_row_each(platform, tenant.name, load.answered)
