"""docs/guardrails-analytics.md's queries, run through the SQL API over known verdicts, figure
by figure; the events go through the real path (JetStream, the analytics writer, migration 0004).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import GUARDRAIL_EVENTS
from llmops.v1 import events_pb2, guardrails_pb2
from tests.analytics.events import interaction, publish, stamp
from tests.analytics.readme import doc_queries
from tests.analytics.service import FAST, AnalyticsProcess
from tests.support import ROOT

DOC = ROOT / "docs" / "guardrails-analytics.md"
SECTION = "## Queries"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
YESTERDAY, LONG_AGO = NOW - dt.timedelta(days=1), NOW - dt.timedelta(days=40)
ACME, ACME_SHADOW, BETA_SHADOW = "acme/default", "acme/strict", "beta/next"


def verdict(
    request: str, tenant: str, scanner: str, rule: str, action: str, ms: float, **fields: Any
) -> events_pb2.GuardrailEvent:
    """One scanner's verdict in one check, as the guardrails service publishes it."""
    when = fields.pop("when", NOW)
    defaults: dict[str, Any] = {
        "policy": ACME if tenant == "acme" else "beta/default",
        "policy_version": 3,
        "direction": "input",
        "api": "gateway",
        "key_id": "0123456789ab",
        "score": 0.9 if rule != "allow" else 0.1,
        "passed": rule == "allow",
    }
    return events_pb2.GuardrailEvent(
        **{**defaults, **fields},
        event_id=uuid.uuid4().hex,
        tenant=tenant,
        request_id=request,
        guardrail=scanner,
        verdict=rule,
        action=action,
        latency_ms=ms,
        time=stamp(when),
    )


def _live() -> list[events_pb2.GuardrailEvent]:
    """What the live policies decided: requests r1..r10 (r11 is older than every window)."""
    email_person, out = ["EMAIL_ADDRESS", "PERSON"], {"direction": "output"}
    return [
        verdict("r1", "acme", "pii", "redact", "block", 2.0, span_types=email_person),
        verdict("r1", "acme", "prompt_injection", "block", "block", 5.0),
        verdict("r2", "acme", "pii", "allow", "allow", 1.0),
        verdict("r2", "acme", "prompt_injection", "allow", "allow", 3.0),
        verdict("r3", "acme", "pii", "redact", "redact", 4.0, span_types=["PERSON"]),
        verdict("r3", "acme", "prompt_injection", "allow", "redact", 4.0),
        verdict("r4", "acme", "pii", "allow", "block", 3.0),
        verdict("r4", "acme", "prompt_injection", "block", "block", 6.0),
        verdict("r5", "acme", "pii", "allow", "redact", 10.0, **out),
        verdict("r5", "acme", "secrets", "redact", "redact", 1.0, span_types=["AWS_KEY"], **out),
        verdict("r6", "acme", "pii", "allow", "allow", 2.0, when=YESTERDAY),
        verdict("r6", "acme", "prompt_injection", "allow", "allow", 2.0, when=YESTERDAY),
        verdict("r7", "beta", "toxicity", "block", "block", 8.0),
        verdict("r8", "beta", "toxicity", "allow", "allow", 250.0, unscanned=True),
        verdict("r9", "beta", "toxicity", "flag", "allow", 7.0),
        verdict("r10", "beta", "prompt_injection", "block", "block", 12.0, direction="context"),
        verdict("r11", "acme", "pii", "block", "block", 100.0, when=LONG_AGO),
    ]


def _shadow() -> list[events_pb2.GuardrailEvent]:
    """Shadow policies over some of the same checks (and r12, which the live policy skipped)."""
    acme = {"policy": ACME_SHADOW, "policy_version": 1, "shadow": True}
    beta = {"policy": BETA_SHADOW, "policy_version": 2, "shadow": True}
    return [
        verdict("r2", "acme", "prompt_injection", "block", "block", 30.0, **acme),
        verdict("r3", "acme", "pii", "block", "block", 30.0, span_types=["PERSON"], **acme),
        verdict("r4", "acme", "pii", "allow", "block", 30.0, **acme),
        verdict("r4", "acme", "prompt_injection", "block", "block", 30.0, **acme),
        verdict("r12", "acme", "prompt_injection", "block", "block", 30.0, **acme),
        verdict("r9", "beta", "toxicity", "block", "block", 30.0, **beta),
        verdict("r11", "acme", "pii", "block", "block", 30.0, when=LONG_AGO, **acme),
    ]


EVENTS = [*_live(), *_shadow()]


@pytest.fixture(scope="module")
async def loaded(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AnalyticsProcess]:
    """Its own service and database, holding exactly the verdicts above."""
    service = AnalyticsProcess(nats_url, Path(tmp_path_factory.mktemp("guardrails")), **FAST)
    service.start()
    await service.wait_healthy()
    for event in EVENTS:
        await js.publish(
            GUARDRAIL_EVENTS, event.SerializeToString(), headers={"Nats-Msg-Id": event.event_id}
        )
    yield service
    service.stop()
    await service.close()


async def _rows(service: AnalyticsProcess, key: str, name: str) -> list[list[Any]]:
    await service.wait_for(key, "SELECT count() FROM guardrail_verdicts", len(EVENTS))
    reply = await service.query(key, doc_queries(DOC, SECTION)[name])
    return [list(r) for r in reply.rows]


def test_the_doc_shows_the_four_queries() -> None:
    assert list(doc_queries(DOC, SECTION)) == [
        "block rate by scanner and tenant per day",
        "p95 latency per scanner and direction",
        "shadow would-blocks",
        "top rules firing",
    ]


async def test_block_rate_by_scanner_and_tenant_per_day(
    loaded: AnalyticsProcess, analyst_key: str
) -> None:
    rows = await _rows(loaded, analyst_key, "block rate by scanner and tenant per day")
    today, yesterday = NOW.date().isoformat(), YESTERDAY.date().isoformat()
    # Shadow verdicts and r11 (40 days ago) are not counted; r8 did not run, and is a check.
    assert [[t, d, s, b, n, u] for t, d, s, b, n, _, u in rows] == [
        ["acme", yesterday, "pii", 0, 1, 0],
        ["acme", yesterday, "prompt_injection", 0, 1, 0],
        ["acme", today, "pii", 0, 5, 0],
        ["acme", today, "prompt_injection", 2, 4, 0],
        ["acme", today, "secrets", 0, 1, 0],
        ["beta", today, "prompt_injection", 1, 1, 0],
        ["beta", today, "toxicity", 1, 3, 1],
    ]
    assert [r[5] for r in rows] == pytest.approx([0, 0, 0, 0.5, 0, 1, 1 / 3])


async def test_p95_latency_per_scanner_and_direction(
    loaded: AnalyticsProcess, analyst_key: str
) -> None:
    rows = await _rows(loaded, analyst_key, "p95 latency per scanner and direction")
    # Live verdicts that ran in the last 7 days (r8 did not run; shadow runs wait for no one).
    latencies = {
        ("prompt_injection", "context"): [12.0],
        ("pii", "output"): [10.0],
        ("toxicity", "input"): [8.0, 7.0],
        ("prompt_injection", "input"): [5.0, 3.0, 4.0, 6.0, 2.0],
        ("pii", "input"): [2.0, 1.0, 4.0, 3.0, 2.0],
        ("secrets", "output"): [1.0],
    }
    assert [(r[0], r[1]) for r in rows] == list(latencies), "slowest p95 first"
    for row, values in zip(rows, latencies.values(), strict=True):
        expected = [np.percentile(values, 50), np.percentile(values, 95), max(values)]
        assert row[2:5] == pytest.approx(expected, rel=1e-5), row
        assert row[5] == len(values)
    assert rows[4][3] == pytest.approx(3.8, rel=1e-5)  # pii on input: 1, 2, 2, 3, 4


async def test_shadow_would_blocks(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "shadow would-blocks")
    assert rows == [
        # r2 (live: allowed), r4 (live: blocked too), r12 (no live check)
        [ACME_SHADOW, "prompt_injection", 3, 1, 1, 1],
        [ACME_SHADOW, "pii", 1, 0, 1, 0],  # r3 (live: redacted)
        [BETA_SHADOW, "toxicity", 1, 0, 1, 0],  # r9 (live: flagged, allowed)
    ]


async def test_a_tenant_sees_only_its_shadow_policies(
    loaded: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    await _rows(loaded, analyst_key, "shadow would-blocks")
    key = (await KeyAdmin(js).create_key("beta")).key
    await asyncio.sleep(0.3)  # the service's key watch sees the new key
    reply = await loaded.query(key, doc_queries(DOC, SECTION)["shadow would-blocks"])
    assert [list(r) for r in reply.rows] == [[BETA_SHADOW, "toxicity", 1, 0, 1, 0]]


async def test_top_rules_firing(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, "top rules firing")
    assert rows == [
        ["prompt_injection", "block", "", 3, 2],  # r1, r4 (acme), r10 (beta): no spans
        ["pii", "redact", "PERSON", 2, 1],  # r1, r3
        ["pii", "redact", "EMAIL_ADDRESS", 1, 1],  # r1
        ["secrets", "redact", "AWS_KEY", 1, 1],  # r5
        ["toxicity", "block", "", 1, 1],  # r7
        ["toxicity", "flag", "", 1, 1],  # r9
    ]


async def test_the_guardrail_summary_lands_on_its_interaction(
    loaded: AnalyticsProcess, js: JetStreamContext, analyst_key: str
) -> None:
    summary = guardrails_pb2.GuardrailSummary(
        policy=ACME,
        policy_version=3,
        input_action="redact",
        output_action="block",
        fired=["pii", "secrets"],
        input_ms=4.5,
        output_ms=11.25,
        blocked_passages=2,
    )
    checked, unchecked = interaction("acme", guardrails=summary), interaction("acme")
    await publish(js, [checked, unchecked])
    await loaded.wait_for(analyst_key, "SELECT count() FROM interactions", 2)
    reply = await loaded.query(
        analyst_key,
        "SELECT guardrail_policy, guardrail_policy_version, guardrail_input_action, "
        "guardrail_output_action, guardrail_fired, guardrail_input_ms, guardrail_output_ms, "
        "guardrail_blocked_passages FROM interactions ORDER BY guardrail_policy DESC",
    )
    assert [list(r) for r in reply.rows] == [
        [ACME, 3, "redact", "block", ["pii", "secrets"], 4.5, 11.25, 2],
        ["", 0, "", "", [], 0.0, 0.0, 0],
    ]
