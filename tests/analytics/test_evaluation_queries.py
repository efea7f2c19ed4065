"""docs/evaluation-analytics.md's queries (and llmops.evaluation.queries, the same text), run
through the SQL API over known events, figure by figure. The events take the real path:
JetStream, the analytics writer, migration 0005.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import ListValue, Struct
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import (
    DRIFT_EVENTS,
    EVAL_RUN_EVENTS,
    EVALUATION_EVENTS,
    FEEDBACK_EVENTS,
    INTERACTION_EVENTS,
    USAGE_EVENTS,
)
from llmops.evaluation import queries
from llmops.v1 import events_pb2
from tests.analytics.events import interaction, stamp, usage_event
from tests.analytics.readme import doc_queries
from tests.analytics.service import FAST, AnalyticsProcess
from tests.support import ROOT

DOC = ROOT / "docs" / "evaluation-analytics.md"
ANALYST, CLI = "## Queries", "## Queries `llmops eval` runs"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
HOUR_AGO, LONG_AGO = NOW - dt.timedelta(hours=1), NOW - dt.timedelta(days=40)
RUN_START = NOW - dt.timedelta(hours=2)
PARAMS = {"since": queries.time_param(NOW - dt.timedelta(days=7)), "prompt": "support"}
MILLI_USD = 1_000_000  # cost_nanos of a thousandth of a dollar
GPT4O, MINI, LOCAL = "openai/gpt-4o", "openai/gpt-4o-mini", "triton/extractive_answerer"
G, R = "groundedness", "answer_relevance"


def _asked(
    tenant: str, rid: str, version: str, arm: str, ms: float, model: str, **fields: Any
) -> events_pb2.InteractionEvent:
    label = fields.pop("prompt_label", "production" if arm else "")
    defaults = {"prompt": "support", "when": HOUR_AGO}
    return interaction(
        tenant,
        **{**defaults, **fields},
        request_id=rid,
        prompt_version=version,
        prompt_label=label,
        prompt_arm=arm,
        total_ms=ms,
        model_used=model,
    )


# acme's support prompt: production splits v2 (a1..a4) / v10 (b1..b4, b4 failed), staging
# has one arm (s1), n1 named version 10; o1 is older than every window; x1 another prompt.
INTERACTIONS = [
    *(_asked("acme", f"a{i}", "2", "v2", 100.0 * i, MINI) for i in range(1, 5)),
    *(_asked("acme", f"b{i}", "10", "v10", 50.0 + 100 * i, GPT4O) for i in range(1, 4)),
    _asked("acme", "b4", "10", "v10", 5000.0, "", status="UNAVAILABLE"),
    _asked("acme", "n1", "10", "", 50.0, GPT4O),
    _asked("acme", "s1", "11", "v11", 120.0, MINI, prompt_label="staging"),
    _asked("acme", "o1", "2", "v2", 10.0, MINI, when=LONG_AGO),
    _asked("acme", "x1", "1", "", 80.0, LOCAL, prompt="other"),
    _asked("beta", "c1", "2", "v2", 1000.0, MINI),
]
_TIME = {e.request_id: e.time.ToDatetime(dt.UTC) for e in INTERACTIONS}
_COST = {"a": 1, "b": 4, "n": 2, "s": 1, "o": 1000, "c": 10}  # thousandths of a dollar
USAGE = [
    usage_event(
        e.tenant,
        _COST[e.request_id[0]] * MILLI_USD,
        request_id=e.request_id,
        model=e.model_used,
        when=_TIME[e.request_id],
    )
    for e in INTERACTIONS
    if e.request_id[0] in _COST and e.request_id != "b4"
]


def _score(rid: str, evaluator: str, score: float, kind: str = "online") -> Message:
    tenant = "beta" if rid.startswith("c") else "acme"
    return events_pb2.EvaluationEvent(
        event_id=uuid.uuid4().hex,
        tenant=tenant,
        request_id=rid,
        evaluator=evaluator,
        score=score,
        kind=kind,
        time=stamp(_TIME[rid] + dt.timedelta(minutes=1)),
    )


SCORES = [
    _score("a1", G, 0.8),
    _score("a1", R, 0.6),
    _score("a2", G, 0.4),
    _score("a3", G, 0.6),
    _score("a3", G, 0.8),  # scored twice: a3 counts with 0.7
    _score("b1", G, 0.9),
    _score("b1", R, 0.8),
    _score("b2", G, 1.0),
    _score("n1", G, 0.5),
    _score("x1", G, 0.5),
    _score("c1", G, 0.2),
    _score("a4", G, 0.0, kind="judge"),  # not an online score
]


def _judged(rid: str, thumbs: int, source: str = "user", **fields: Any) -> events_pb2.FeedbackEvent:
    """As the gateway makes it: one id per (request, judge), `time` = the interaction's."""
    tenant = "beta" if rid.startswith("c") else "acme"
    return events_pb2.FeedbackEvent(
        event_id=f"{rid}-{source}",
        tenant=tenant,
        request_id=rid,
        source=source,
        thumbs=thumbs,
        score=fields.pop("score", float(thumbs)),
        time=stamp(_TIME[rid]),
        given_at=stamp(fields.pop("given_at", NOW - dt.timedelta(minutes=50))),
    )


FEEDBACK = [
    _judged("a1", -1),  # replaced by REJUDGED below
    _judged("a2", -1),
    _judged("a2", 1, source="reviewer"),
    _judged("a3", 0, score=0.5),  # a score, no thumbs: rated
    _judged("b1", 1),
    _judged("b2", 1),
    _judged("b3", 1),
    _judged("n1", -1),
    _judged("c1", 1),
]
# Later, in a batch of their own: a1's judge changes their mind; o1's lands after it.
LATER_FEEDBACK = [_judged("a1", 1, given_at=NOW - dt.timedelta(minutes=40)), _judged("o1", 1)]


def _run(
    run_id: str, tenant: str, status: str, when: dt.datetime, **fields: Any
) -> events_pb2.EvalRunEvent:
    defaults: dict[str, Any] = {
        "dataset": "faq",
        "dataset_version": "sha256:abc",
        "prompt": "support",
        "prompt_version": "2",
        "model": LOCAL,
        "key_id": "0123456789ab",
        "settings": {"top_k": "4"},
        "concurrency": 4,
    }
    return events_pb2.EvalRunEvent(
        **{**defaults, **fields}, event_id=run_id, tenant=tenant, status=status, time=stamp(when)
    )


RUN_END = _run(
    "R1",
    "acme",
    "finished",
    RUN_START,
    items=3,
    failed_items=1,
    finished_at=stamp(RUN_START + dt.timedelta(minutes=5)),
    summary={"exact_match": 2 / 3, "token_f1": 0.75},
    judge_input_tokens=1200,
    judge_output_tokens=300,
    judge_cost_nanos=1_234_567,
    currency="USD",
    reason="1 item failed: UNAVAILABLE",
    evaluations=15,
)
RUNS = [RUN_END, _run("R2", "beta", "running", NOW - dt.timedelta(minutes=30))]
# Later: R1's start, as a redelivery would bring it after its end (it must not replace
# the end), then R0, from long ago.
LATER_RUNS = [
    _run("R1", "acme", "running", RUN_START),
    _run("R0", "acme", "finished", LONG_AGO, finished_at=stamp(LONG_AGO)),
]


def _item(
    run: str, item: str, evaluator: str, score: float, passed: bool, at_s: int, reason: str = ""
) -> Message:
    return events_pb2.EvaluationEvent(
        event_id=uuid.uuid4().hex,
        tenant="beta" if run == "R2" else "acme",
        run_id=run,
        item_id=item,
        evaluator=evaluator,
        score=score,
        passed=passed,
        reason=reason,
        kind="offline",
        time=stamp(RUN_START + dt.timedelta(seconds=at_s)),
    )


ITEMS = [
    _item("R1", "i1", "exact_match", 1.0, True, 1),
    _item("R1", "i1", "token_f1", 1.0, True, 1),
    _item("R1", "i2", "exact_match", 0.0, False, 2, "differs"),
    _item("R1", "i2", "token_f1", 0.5, False, 2),
    _item("R1", "i3", "exact_match", 0.0, False, 10, "first try"),
    _item("R1", "i3", "exact_match", 1.0, True, 20),  # scored again: the latest counts
    _item("R1", "i3", "token_f1", 0.75, True, 10),
    _item("R2", "i1", "exact_match", 0.0, False, 3600 + 1),
]


def _drift(
    tenant: str, signal: str, method: str, stat: float, p: float, drifted: bool, when: dt.datetime
) -> events_pb2.DriftEvent:
    return events_pb2.DriftEvent(
        event_id=uuid.uuid4().hex,
        tenant=tenant,
        signal=signal,
        method=method,
        statistic=stat,
        p_value=p,
        threshold=0.01,
        drifted=drifted,
        time=stamp(when),
        reference_start=stamp(when - dt.timedelta(days=8)),
        reference_end=stamp(when - dt.timedelta(days=1)),
        recent_start=stamp(when - dt.timedelta(days=1)),
        recent_end=stamp(when),
        n_reference=5000,
        n_recent=700,
    )


DRIFT = [
    _drift("acme", "questions", "mmd", 0.12, 0.001, True, NOW - dt.timedelta(minutes=10)),
    _drift("acme", f"score:{G}", "psi", 0.05, -1.0, False, NOW - dt.timedelta(minutes=20)),
    _drift("beta", "questions", "mmd", 0.01, 0.6, False, NOW - dt.timedelta(minutes=5)),
    _drift("acme", "questions", "mmd", 0.5, 0.0, True, LONG_AGO),
]


def _msg_id(event: Any) -> str:
    """Nats-Msg-Id: a judgement given again, or a run's end, is a new message of the same event."""
    if isinstance(event, events_pb2.FeedbackEvent):
        return f"{event.event_id}-{event.given_at.ToMilliseconds()}"
    if isinstance(event, events_pb2.EvalRunEvent):
        return f"{event.event_id}-{event.status}"
    return str(event.event_id)


async def _publish(js: JetStreamContext, subject: str, events: list[Any]) -> None:
    for e in events:
        await js.publish(subject, e.SerializeToString(), headers={"Nats-Msg-Id": _msg_id(e)})


@pytest.fixture(scope="module")
async def loaded(
    nats_url: str,
    js: JetStreamContext,
    tmp_path_factory: pytest.TempPathFactory,
    analyst_key: str,
) -> AsyncIterator[AnalyticsProcess]:
    """Its own service and database, holding exactly the events above."""
    service = AnalyticsProcess(nats_url, Path(tmp_path_factory.mktemp("evaluation")), **FAST)
    service.start()
    await service.wait_healthy()
    batches: list[tuple[str, str, list[Any]]] = [
        (INTERACTION_EVENTS, "interactions", INTERACTIONS),
        (USAGE_EVENTS, "usage", USAGE),
        (EVALUATION_EVENTS, "evaluations", [*SCORES, *ITEMS]),
        (FEEDBACK_EVENTS, "feedback", FEEDBACK),
        (EVAL_RUN_EVENTS, "eval_runs", RUNS),
        (DRIFT_EVENTS, "drift_events", DRIFT),
    ]
    for subject, _, events in batches:
        await _publish(js, subject, events)
    for _, table, events in batches:
        await service.wait_for(analyst_key, f"SELECT count() FROM {table}", len(events))
    await _publish(js, FEEDBACK_EVENTS, LATER_FEEDBACK)
    await _publish(js, EVAL_RUN_EVENTS, LATER_RUNS)
    # Each subject's events are stored in order: the last one there means all of them are.
    last = "SELECT count() FROM {} WHERE event_id = '{}'"
    await service.wait_for(analyst_key, last.format("feedback", LATER_FEEDBACK[-1].event_id), 1)
    await service.wait_for(analyst_key, last.format("eval_runs", LATER_RUNS[-1].event_id), 1)
    yield service
    service.stop()
    await service.close()


@pytest.fixture(scope="module")
async def beta_key(js: JetStreamContext, loaded: AnalyticsProcess) -> str:
    key = (await KeyAdmin(js).create_key("beta")).key
    await asyncio.sleep(0.3)  # the service's key watch sees the new key
    return key


async def _rows(
    service: AnalyticsProcess, key: str, sql: str, **parameters: str
) -> list[list[Any]]:
    reply = await service.query(key, sql, parameters=parameters)
    return [[_plain(v) for v in r] for r in reply.rows]


def _plain(value: Any) -> Any:
    """A cell's protobuf Struct / ListValue as a dict / list."""
    if isinstance(value, Struct):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, ListValue):
        return [_plain(v) for v in value]
    return value


def _analyst(name: str) -> str:
    return doc_queries(DOC, ANALYST)[name]


def _ts(when: dt.datetime) -> str:
    """A DateTime64 cell as the SQL API returns it."""
    return when.replace(tzinfo=None).isoformat()


def test_the_doc_shows_the_queries_the_cli_runs() -> None:
    assert list(doc_queries(DOC, ANALYST)) == [
        "feedback and online scores by prompt version",
        "quality per dollar by model",
    ]
    shown = doc_queries(DOC, CLI)
    constants = [
        queries.AB_ARMS_SQL,
        queries.AB_SCORES_SQL,
        queries.RUN_ITEMS_SQL,
        queries.RUN_SQL,
        queries.RUNS_SQL,
        queries.DRIFT_SQL,
    ]
    assert list(shown.values()) == [c.strip() for c in constants]


def test_a_time_parameter_is_utc_milliseconds() -> None:
    when = dt.datetime(2026, 3, 1, 1, 2, 3, 456789, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert queries.time_param(when) == "2026-02-28 23:02:03.456"
    with pytest.raises(ValueError, match="aware"):
        queries.time_param(dt.datetime(2026, 3, 1))


async def test_feedback_and_online_scores_by_prompt_version(
    loaded: AnalyticsProcess, analyst_key: str
) -> None:
    rows = await _rows(
        loaded, analyst_key, _analyst("feedback and online scores by prompt version")
    )
    assert [r[:5] + r[6:8] for r in rows] == [
        # tenant, prompt, version, requests, rated, thumbs up, down
        ["acme", "other", "1", 1, 0, 0, 0],  # x1
        ["acme", "support", "10", 5, 4, 3, 1],  # b1..b4, n1; b4 unrated, n1 down
        ["acme", "support", "11", 1, 0, 0, 0],  # s1
        ["acme", "support", "2", 4, 3, 2, 1],  # a1 (rejudged up), a2 (user down, reviewer up), a3
        ["beta", "support", "2", 1, 1, 1, 0],
    ]
    assert [r[5] for r in rows] == pytest.approx([0.0, 0.8, 0.0, 0.75, 1.0])
    assert [r[8] for r in rows] == [None, pytest.approx(0.75), None, pytest.approx(2 / 3), 1.0]
    scores = [{G: 0.5}, {G: 0.8, R: 0.8}, {}, {G: (0.8 + 0.4 + 0.7) / 3, R: 0.6}, {G: 0.2}]
    assert [r[9] for r in rows] == [pytest.approx(s) for s in scores]


async def test_quality_per_dollar_by_model(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, _analyst("quality per dollar by model"))
    assert [[t, m, n, Decimal(c), Decimal(cpr)] for t, m, n, c, cpr, *_ in rows] == [
        ["acme", GPT4O, 4, Decimal("0.014"), Decimal("0.0035")],  # b1..b3, n1 (b4 had no model)
        ["acme", MINI, 5, Decimal("0.005"), Decimal("0.001")],  # a1..a4, s1
        ["acme", LOCAL, 1, 0, 0],
        ["beta", MINI, 1, Decimal("0.01"), Decimal("0.01")],
    ]
    mini = {G: (0.8 + 0.4 + 0.7) / 3, R: 0.6}
    assert [r[5] for r in rows] == [
        pytest.approx(s) for s in ({G: 0.8, R: 0.8}, mini, {G: 0.5}, {G: 0.2})
    ]
    per_dollar = [
        {G: 0.8 / 0.0035, R: 0.8 / 0.0035},
        {G: mini[G] / 0.001, R: 600.0},
        {G: None},
        {G: 20.0},
    ]
    assert [r[6] for r in rows] == [pytest.approx(s) for s in per_dollar]
    assert [r[7] for r in rows] == [3, 2, 0, 1]
    assert [r[8] for r in rows] == [pytest.approx(3 / 0.014), pytest.approx(400.0), None, 100.0]


async def test_per_a_b_arm_of_a_prompt(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, queries.AB_ARMS_SQL, **PARAMS)
    assert [r[:5] + r[7:10] for r in rows] == [
        # tenant, label, arm, requests, errors, rated, up, down; v2 before v10
        ["acme", "production", "v2", 4, 0, 3, 2, 1],
        ["acme", "production", "v10", 4, 1, 3, 3, 0],
        ["acme", "staging", "v11", 1, 0, 0, 0, 0],
        ["beta", "production", "v2", 1, 0, 1, 1, 0],
    ]
    scores = [{G: (0.8 + 0.4 + 0.7) / 3, R: 0.6}, {G: 0.95, R: 0.8}, {}, {G: 0.2}]
    assert [r[5] for r in rows] == [pytest.approx(s) for s in scores]
    assert [r[6] for r in rows] == [{G: 3, R: 1}, {G: 2, R: 1}, {}, {G: 1}]
    assert [r[10] for r in rows] == [pytest.approx(2 / 3), 1.0, None, 1.0]
    p95 = [np.percentile(ms, 95) for ms in ([100, 200, 300, 400], [150, 250, 350], [120], [1000])]
    assert [r[11] for r in rows] == pytest.approx(p95)  # b4 failed: not in v10's latency
    assert [[Decimal(c), Decimal(cpr)] for c, cpr in (r[12:14] for r in rows)] == [
        [Decimal("0.004"), Decimal("0.001")],
        [Decimal("0.012"), Decimal("0.003")],  # b4 cost nothing and counts as a request
        [Decimal("0.001"), Decimal("0.001")],
        [Decimal("0.01"), Decimal("0.01")],
    ]


async def test_a_b_online_scores_are_the_samples_behind_the_means(
    loaded: AnalyticsProcess, analyst_key: str
) -> None:
    rows = await _rows(loaded, analyst_key, queries.AB_SCORES_SQL, **PARAMS)
    assert [r[:3] for r in rows] == [
        ["acme", "production", "v2"],
        ["acme", "production", "v10"],
        ["beta", "production", "v2"],
    ]
    samples = [{k: sorted(v) for k, v in r[3].items()} for r in rows]
    assert samples == [
        {G: pytest.approx([0.4, 0.7, 0.8]), R: pytest.approx([0.6])},
        {G: pytest.approx([0.9, 1.0]), R: pytest.approx([0.8])},
        {G: pytest.approx([0.2])},
    ]


async def test_items_of_a_run(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, queries.RUN_ITEMS_SQL, run_id="R1")
    assert rows == [
        ["i1", "exact_match", 1.0, True, ""],
        ["i1", "token_f1", 1.0, True, ""],
        ["i2", "exact_match", 0.0, False, "differs"],
        ["i2", "token_f1", 0.5, False, ""],
        ["i3", "exact_match", 1.0, True, ""],  # its second score
        ["i3", "token_f1", 0.75, True, ""],
    ]


async def test_one_run_as_it_ended(loaded: AnalyticsProcess, analyst_key: str) -> None:
    reply = await loaded.query(analyst_key, queries.RUN_SQL, parameters={"run_id": "R1"})
    assert len(reply.rows) == 1, "the start and the end are one run"
    run = dict(zip([c.name for c in reply.columns], map(_plain, reply.rows[0]), strict=True))
    assert run == {
        "run_id": "R1",
        "tenant": "acme",
        "started_at": _ts(RUN_START),
        "finished_at": _ts(RUN_START + dt.timedelta(minutes=5)),
        "status": "finished",
        "dataset": "faq",
        "dataset_version": "sha256:abc",
        "prompt": "support",
        "prompt_version": "2",
        "model": LOCAL,
        "items": 3,
        "failed_items": 1,
        "summary": {"exact_match": pytest.approx(2 / 3), "token_f1": 0.75},
        "judge_input_tokens": 1200,
        "judge_output_tokens": 300,
        "judge_cost": "0.001234567",
        "currency": "USD",
        "reason": "1 item failed: UNAVAILABLE",
        "settings": {"top_k": "4"},
        "concurrency": 4,
        "evaluations": 15,
        "key_id": "0123456789ab",
    }


async def test_recent_runs(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, queries.RUNS_SQL, since=PARAMS["since"])
    assert [r[:5] for r in rows] == [
        [
            "R2",
            "beta",
            _ts(NOW - dt.timedelta(minutes=30)),
            _ts(dt.datetime(1970, 1, 1)),
            "running",
        ],
        ["R1", "acme", _ts(RUN_START), _ts(RUN_START + dt.timedelta(minutes=5)), "finished"],
    ]  # R0 started 40 days ago


async def test_recent_drift_events(loaded: AnalyticsProcess, analyst_key: str) -> None:
    rows = await _rows(loaded, analyst_key, queries.DRIFT_SQL, since=PARAMS["since"])
    newest_first = [DRIFT[2], DRIFT[0], DRIFT[1]]
    assert rows == [
        [
            _ts(e.time.ToDatetime()),
            e.tenant,
            e.signal,
            e.method,
            pytest.approx(e.statistic),
            pytest.approx(e.p_value),
            0.01,
            e.drifted,
            _ts(e.reference_start.ToDatetime()),
            _ts(e.reference_end.ToDatetime()),
            _ts(e.recent_start.ToDatetime()),
            _ts(e.recent_end.ToDatetime()),
            5000,
            700,
        ]
        for e in newest_first
    ]


async def test_a_tenant_sees_only_its_own_evaluation_rows(
    loaded: AnalyticsProcess, beta_key: str
) -> None:
    arms = await _rows(loaded, beta_key, queries.AB_ARMS_SQL, **PARAMS)
    assert [r[:5] for r in arms] == [["beta", "production", "v2", 1, 0]]
    by_version = await _rows(
        loaded, beta_key, _analyst("feedback and online scores by prompt version")
    )
    assert [r[:5] for r in by_version] == [["beta", "support", "2", 1, 1]]
    per_dollar = await _rows(loaded, beta_key, _analyst("quality per dollar by model"))
    assert [r[:3] for r in per_dollar] == [["beta", MINI, 1]]
    assert await _rows(loaded, beta_key, queries.RUN_SQL, run_id="R1") == []
    assert await _rows(loaded, beta_key, queries.RUN_ITEMS_SQL, run_id="R1") == []
    runs = await _rows(loaded, beta_key, queries.RUNS_SQL, since=PARAMS["since"])
    assert [r[:2] for r in runs] == [["R2", "beta"]]
    drift = await _rows(loaded, beta_key, queries.DRIFT_SQL, since=PARAMS["since"])
    assert [r[1:3] for r in drift] == [["beta", "questions"]]
