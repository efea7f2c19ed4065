"""`llmops guardrails` against a real nats-server, and the formatting of `test`'s output."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.js import JetStreamContext

from llmops.cli.guardrails import check_report, policy_changes
from llmops.cli.main import cli
from llmops.guardrails.policy import parse_policy
from llmops.guardrails.store import PolicyStore
from llmops.v1 import guardrails_pb2

Invoke = Callable[..., Awaitable[Result]]


def _tenant() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


@pytest.fixture
def invoke(nats_url: str, tmp_path: Path) -> Invoke:
    """Run `llmops guardrails ...` in a worker thread (it runs its own event loop)."""

    async def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
        environment = {"LLMOPS_NATS_URL": nats_url, "LLMOPS_DATA_DIR": str(tmp_path), **(env or {})}
        return await asyncio.to_thread(
            CliRunner().invoke, cli, ["guardrails", *args], env=environment
        )

    return run


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    path.write_text(text)
    return str(path)


async def test_set_refuses_a_broken_file_and_stores_nothing(
    invoke: Invoke, js: JetStreamContext, tmp_path: Path
) -> None:
    tenant = _tenant()
    broken = _file(tmp_path, f"tenant: {tenant}\ninput:\n  pii:\n    threshold: 3\n")
    result = await invoke("set", broken)
    assert result.exit_code == 2
    assert "nothing stored" in result.stderr
    assert "input.pii.threshold" in result.stderr
    assert "less than or equal to 1" in result.stderr
    store = await PolicyStore.open(js)
    assert await store.history(tenant, "default") == []

    unknown = _file(tmp_path, f"tenant: {tenant}\noutput:\n  malware: {{}}\n")
    result = await invoke("set", unknown)
    assert result.exit_code == 2
    assert "output.malware: unknown field" in result.stderr
    assert await store.list(tenant) == []


async def test_set_show_list_history(invoke: Invoke, tmp_path: Path) -> None:
    tenant = _tenant()
    first = f"tenant: {tenant}\ninput:\n  pii:\n    threshold: 0.5\n"
    result = await invoke("set", _file(tmp_path, first), "--by", "alice")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"stored {tenant}/default version 1\n"
    second = (
        f"tenant: {tenant}\nfail_mode: closed\ninput:\n  pii:\n    threshold: 0.7\n"
        "    entities: [EMAIL, DATE]\noutput:\n  toxicity: {}\n"
    )
    result = await invoke("set", _file(tmp_path, second))
    assert result.stdout == f"stored {tenant}/default version 2\n"

    shown = await invoke("show", "--tenant", tenant, "--version", "1")
    assert shown.exit_code == 0
    v1 = parse_policy(shown.stdout)
    assert v1.input.pii is not None and v1.input.pii.threshold == 0.5
    current = json.loads((await invoke("show", "--tenant", tenant, "--json")).stdout)
    assert (current["version"], current["updated_by"], current["fail_mode"]) == (2, "cli", "closed")
    missing = await invoke("show", "--tenant", tenant, "--name", "nope")
    assert missing.exit_code == 1
    assert f"no policy {tenant}/nope" in missing.stderr

    lines = (await invoke("list", "--tenant", tenant)).stdout.splitlines()
    assert lines[0].split("\t") == [
        "tenant",
        "name",
        "version",
        "updated_at",
        "updated_by",
        "fail_mode",
        "shadow",
        "scanners",
    ]
    row = lines[1].split("\t")
    assert len(lines) == 2
    assert row[:3] == [tenant, "default", "2"]
    assert row[4:] == ["cli", "closed", "-", "in:pii out:toxicity"]
    listed = json.loads((await invoke("list", "--tenant", tenant, "--json")).stdout)
    assert [p["version"] for p in listed] == [2]

    history = (await invoke("history", "--tenant", tenant)).stdout.splitlines()
    assert [h.split("\t")[:3:2] for h in history[1:]] == [["1", "alice"], ["2", "cli"]]
    assert history[1].endswith("\tcreated")
    change = history[2].split("\t")[3]
    assert "fail_mode open -> closed" in change
    assert "input.pii.threshold 0.5 -> 0.7" in change
    assert "input.pii.entities +DATE" in change
    assert "+output.toxicity" in change


async def test_set_warns_of_a_missing_shadow_and_refuses_a_loop(
    invoke: Invoke, tmp_path: Path
) -> None:
    tenant = _tenant()
    result = await invoke("set", _file(tmp_path, f"tenant: {tenant}\nname: a\nshadow: b\n"))
    assert result.exit_code == 0
    assert f"shadow {tenant}/b does not exist" in result.stderr
    result = await invoke("set", _file(tmp_path, f"tenant: {tenant}\nname: b\nshadow: a\n"))
    assert result.exit_code == 2
    assert "loop" in result.stderr


async def test_a_bad_tenant_option_is_refused(invoke: Invoke) -> None:
    result = await invoke("show", "--tenant", "Acme Corp")
    assert result.exit_code == 2
    assert "Invalid value for '--tenant'" in result.stderr


async def test_without_a_platform_or_nats_url_it_says_so(invoke: Invoke, tmp_path: Path) -> None:
    result = await invoke("list", env={"LLMOPS_NATS_URL": None})
    assert result.exit_code == 1
    assert "the platform is not running" in result.stderr


def test_policy_changes_name_each_setting() -> None:
    before = parse_policy(
        "tenant: acme\ninput:\n  pii: {}\n  topics:\n    banned: [{name: x, description: xyz}]\n"
    )
    after = parse_policy(
        "tenant: acme\ntime_budget_ms: 100\ninput:\n  pii:\n    entities: [EMAIL]\n"
    )
    changes = policy_changes(before, after)
    assert "time_budget_ms 250.0 -> 100.0" in changes
    assert "-input.topics" in changes
    assert any(c.startswith("input.pii.entities -PHONE") for c in changes)
    assert policy_changes(after, after.model_copy(update={"version": 9})) == []


def test_check_report_formats_every_verdict() -> None:
    reply = guardrails_pb2.CheckResponse(
        action=guardrails_pb2.ACTION_REDACT,
        text="mail <EMAIL_1> now",
        policy_id="acme/default",
        policy_version=4,
        latency_ms=12.34,
        verdicts=[
            guardrails_pb2.Verdict(
                scanner="pii",
                score=0.97,
                passed=False,
                action="redact",
                latency_ms=1.25,
                reason="an email address",
                spans=[
                    guardrails_pb2.Span(type="EMAIL", start=5, end=18, replacement="<EMAIL_1>"),
                    guardrails_pb2.Span(type="PERSON", start=20, end=24),
                ],
            ),
            guardrails_pb2.Verdict(scanner="prompt_injection", score=0.01, passed=True),
            guardrails_pb2.Verdict(scanner="toxicity", unscanned=True, reason="over budget"),
        ],
    )
    head, rows = check_report(reply)
    assert head == [
        "action: redact (policy acme/default version 4, 12.3 ms)",
        "redacted: mail <EMAIL_1> now",
    ]
    assert rows == [
        ["pii", "no", "0.970", "redact", "1.2 ms", "EMAIL 5-18, PERSON 20-24", "an email address"],
        ["prompt_injection", "yes", "0.010", "-", "0.0 ms", "-", "-"],
        ["toxicity", "unscanned", "0.000", "-", "0.0 ms", "-", "over budget"],
    ]


def test_check_report_of_passages_names_them() -> None:
    reply = guardrails_pb2.CheckResponse(
        action=guardrails_pb2.ACTION_ALLOW,
        blocked_passages=[1],
        verdicts=[
            guardrails_pb2.Verdict(scanner="prompt_injection", passed=True, passage=0),
            guardrails_pb2.Verdict(
                scanner="prompt_injection", passed=False, score=0.9, action="block", passage=1
            ),
        ],
    )
    head, rows = check_report(reply, per_passage=True)
    assert head[1] == "blocked passages: 1"
    assert [r[0] for r in rows] == ["prompt_injection#0", "prompt_injection#1"]
    assert rows[1][3] == "block"
