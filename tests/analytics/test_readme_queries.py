"""Each cost query of docs/analytics.md, run through the SQL API over known events, figure
by figure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nats.js import JetStreamContext

from llmops.v1 import events_pb2, gateway_pb2
from tests.analytics.events import document_event, interaction, publish, usage_event
from tests.analytics.readme import doc_queries
from tests.analytics.service import FAST, AnalyticsProcess

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TODAY, YESTERDAY = NOW - dt.timedelta(minutes=1), NOW - dt.timedelta(days=1)
USD = 1_000_000_000  # cost_nanos per dollar
HIT, SEMANTIC = gateway_pb2.CACHE_STATUS_EXACT_HIT, gateway_pb2.CACHE_STATUS_SEMANTIC_HIT


def _usage() -> list[events_pb2.UsageEvent]:
    acme = {"prompt": "support", "prompt_version": "2", "model": "openai/gpt-4o-mini"}
    return [
        usage_event("acme", USD // 2, when=TODAY, **acme),
        usage_event("acme", USD // 4, when=TODAY, **acme),
        usage_event("acme", USD // 8, when=TODAY, **acme),
        usage_event("acme", USD, when=YESTERDAY, prompt="default", prompt_version="1"),
        usage_event("beta", 2 * USD, when=TODAY, prompt="sales", model="openai/gpt-4o"),
        usage_event("beta", 2 * USD, when=TODAY, prompt="sales", model="openai/gpt-4o"),
        usage_event("beta", 0, when=TODAY, prompt="sales", model="local/x", priced=False),
        usage_event("acme", 50 * USD, when=NOW - dt.timedelta(days=40)),  # outside 30 days
    ]


def _interactions() -> list[events_pb2.InteractionEvent]:
    events = [  # model A answers 20 uncached requests in 10..200 ms, first token at a fifth
        interaction(
            "acme", model_used="triton/a", total_ms=10.0 * i, time_to_first_token_ms=2.0 * i
        )
        for i in range(1, 21)
    ]
    events += [
        interaction("beta", model_used="triton/b", total_ms=ms, time_to_first_token_ms=ms / 2)
        for ms in (100.0, 300.0)
    ]
    events += [interaction("acme", model_used="triton/a", total_ms=1.0, cache=HIT)]
    events += [interaction("beta", model_used="triton/b", total_ms=1.0, cache=SEMANTIC)]
    events += [interaction("beta", model_used="triton/b", total_ms=1.0, cache=HIT)]
    events += [
        interaction("acme", status="UNAVAILABLE", model_used="", total_ms=5000.0),
        interaction("acme", status="UNAVAILABLE", model_used="", total_ms=5000.0),
        interaction("beta", status="RESOURCE_EXHAUSTED", model_used="", total_ms=1.0),
    ]
    return events


def _documents() -> list[events_pb2.DocumentEvent]:
    failed = events_pb2.DOCUMENT_STATUS_FAILED
    return [
        document_event("acme", 100),
        document_event("acme", 200),
        document_event("acme", 300),
        document_event("acme", 0, status=failed),
        document_event("beta", 1000),
    ]


@pytest.fixture(scope="module")
async def loaded(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AnalyticsProcess]:
    """Its own service and database, holding exactly the events above."""
    service = AnalyticsProcess(nats_url, Path(tmp_path_factory.mktemp("readme")), **FAST)
    service.start()
    await service.wait_healthy()
    await publish(js, [*_usage(), *_interactions(), *_documents()])
    yield service
    service.stop()
    await service.close()


async def _rows(service: AnalyticsProcess, key: str, name: str) -> list[list[Any]]:
    sql = doc_queries()[name]
    await service.wait_for(key, "SELECT count() FROM documents", len(_documents()))
    await service.wait_for(key, "SELECT count() FROM usage", len(_usage()))
    await service.wait_for(key, "SELECT count() FROM interactions", len(_interactions()))
    reply = await service.query(key, sql)
    return [list(r) for r in reply.rows]


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks: what ClickHouse's `quantiles` computes."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def test_the_doc_shows_the_six_queries() -> None:
    assert list(doc_queries()) == [
        "cost per tenant per day",
        "top 10 most expensive prompts",
        "p95 latency and time to first token per model",
        "cache hit rate",
        "error rate by code",
        "tokens per document ingested",
    ]


async def test_cost_per_tenant_per_day(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "cost per tenant per day")
    today, yesterday = TODAY.date().isoformat(), YESTERDAY.date().isoformat()
    expected = [
        ["acme", yesterday, "USD", "1", 1, 0],
        ["acme", today, "USD", "0.875", 3, 0],
        ["beta", today, "USD", "4", 3, 1],
    ]
    got = [[t, d, c, str(Decimal(cost).normalize()), n, u] for t, d, c, cost, n, u in rows]
    assert sorted(got, key=lambda r: (r[1], r[0])) == sorted(expected, key=lambda r: (r[1], r[0]))


async def test_top_prompts(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "top 10 most expensive prompts")
    assert [[p, v, cur, str(Decimal(c).normalize()), n] for p, v, cur, c, n in rows] == [
        ["sales", "1", "USD", "4", 3],
        ["default", "1", "USD", "1", 1],
        ["support", "2", "USD", "0.875", 3],
    ]


async def test_latency_per_model(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "p95 latency and time to first token per model")
    a = [10.0 * i for i in range(1, 21)]
    assert [r[0] for r in rows] == ["triton/a", "triton/b"]
    assert rows[0][1] == pytest.approx(_percentile(a, 0.95), rel=1e-3)
    assert rows[0][2] == pytest.approx(_percentile([x / 5 for x in a], 0.95), rel=1e-3)
    assert rows[0][3] == 20  # cache hits and failures are not model latency
    assert rows[1][1] == pytest.approx(_percentile([100.0, 300.0], 0.95), rel=1e-3)
    assert rows[1][3] == 2


async def test_cache_hit_rate(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "cache hit rate")
    assert [r[0] for r in rows] == ["acme", "beta"]
    assert rows[0][1] == pytest.approx(1 / 23) and rows[0][2] == 23
    assert rows[1][1] == pytest.approx(2 / 5) and rows[1][2] == 5


async def test_error_rate_by_code(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "error rate by code")
    total = len(_interactions())
    assert [r[:2] for r in rows] == [["OK", 25], ["UNAVAILABLE", 2], ["RESOURCE_EXHAUSTED", 1]]
    assert [r[2] for r in rows] == pytest.approx([25 / total, 2 / total, 1 / total])


async def test_tokens_per_document(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "tokens per document ingested")
    assert rows == [["acme", 3, 600, 200.0], ["beta", 1, 1000, 1000.0]]
