"""`llmops datasets` and `llmops eval` end to end, on a platform whose model is a local
OpenAI-compatible server that answers from the passages its prompt gives it (a stand-in
for a hosted LLM: real SSE over HTTP). A prompt version that drops the context is
therefore really worse, and `eval compare` must fail it; an equal version must pass.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import nats
import pytest
from click.testing import CliRunner, Result

from llmops.cli.evaluation import datasets, eval_group
from llmops.grpcutil import channel
from llmops.prompts.store import PromptStore
from llmops.v1 import gateway_pb2, gateway_pb2_grpc
from tests.e2e.gateway_support import Tenant, ask, new_tenant
from tests.evaluation.test_runner import GOLDEN, _ingest_samples
from tests.inference.openai_mock import OpenAIMock, Received
from tests.support import Platform, run_platform
from tests.triton.test_extractive_answerer import answerer

ROUTES = """\
default: reader
aliases:
  reader:
    - {provider: openai, model: mock-reader, base_url: "BASE", timeout_s: 10}
"""
GOOD = """\
prompts:
  - name: support
    system: Answer only from the numbered passages and cite them like [1].
    user: |-
      Context:
      {context}

      Question: {question}
"""
# Drops {context}: the model has nothing to answer from.
WORSE = """\
prompts:
  - name: support
    system: Answer from what you know.
    user: "Question: {question}"
"""
# Worded differently, asks the same: answers do not change.
EQUAL = GOOD.replace("Answer only from", "Use nothing but")
_PASSAGE = re.compile(r"^\[(\d+)\] (.*?)(?=\n\n\[\d+\] |\n\nQuestion: |\Z)", re.S | re.M)


class ReaderMock(OpenAIMock):
    """Answers with the passages' sentences that best match the question, cited as [n];
    without passages in its prompt it does not know."""

    async def _respond(self, writer: asyncio.StreamWriter, received: Received) -> bool:
        user = received.body["messages"][-1]["content"]
        question = user.rsplit("Question: ", 1)[-1].strip()
        passages = [m.group(2).strip() for m in _PASSAGE.finditer(user)]
        found = answerer.answer(question, passages)
        text = found.text + "".join(f" [{i + 1}]" for i in found.citations)
        if not passages:
            text = "I do not know."
        one = copy.copy(self)  # this request's answer, whatever runs beside it
        one.pieces = answerer.stream_pieces(text)
        return await OpenAIMock._respond(one, writer, received)


@dataclass
class Rig:
    platform: Platform
    tenant: Tenant
    mock: ReaderMock

    async def cli(self, group: click.Group, *args: str) -> Result:
        env = {**self.platform.env, "LLMOPS_API_KEY": self.tenant.key}
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, group, list(args), env=env)


@pytest.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    tmp = tmp_path_factory.mktemp("eval-cli")
    mock = ReaderMock([])
    server = await asyncio.start_server(mock._handle, "127.0.0.1", mock.port)
    try:
        routes = tmp / "routes.yaml"
        routes.write_text(ROUTES.replace("BASE", mock.base_url))
        extra = {"LLMOPS_ROUTES_FILE": str(routes)}
        with run_platform(tmp / "data", triton=False, extra_env=extra) as platform:
            tenant = await new_tenant(platform)
            await _ingest_samples(platform, tenant.name)
            yield Rig(platform, tenant, mock)
    finally:
        server.close()
        await server.wait_closed()


async def _push_prompt(rig: Rig, text: str) -> int:
    nc = await nats.connect(rig.platform.nats_url)
    try:
        store = await PromptStore.open(nc.jetstream())
        [pushed] = await store.push_text(text, rig.tenant.name, "test")
    finally:
        await nc.close()
    await asyncio.sleep(0.5)  # the gateway's mirror follows within a moment
    return pushed.version


async def _run(rig: Rig, *args: str) -> tuple[Result, dict[str, object]]:
    done = await rig.cli(eval_group, "run", "--dataset", "golden", "--json", *args)
    return done, json.loads(done.stdout) if done.exit_code in (0, 3) else {}


async def test_compare_fails_a_worse_prompt_version_and_passes_an_equal_one(
    rig: Rig, tmp_path: Path
) -> None:
    pushed = await rig.cli(
        datasets, "push", str(GOLDEN), "--name", "golden", "--tenant", rig.tenant.name
    )
    assert pushed.exit_code == 0, pushed.output
    good, worse, equal = [await _push_prompt(rig, t) for t in (GOOD, WORSE, EQUAL)]
    assert (good, worse, equal) == (1, 2, 3)

    done, a = await _run(rig, "--prompt", f"support@{good}", "--concurrency", "4")
    assert done.exit_code == 0, done.output
    assert "[8/8]" in done.stderr and " ok" in done.stderr  # a plain progress line per item
    assert a["status"] == "finished" and a["prompt_version"] == "1" and a["failed_items"] == 0
    summary = a["summary"]
    assert isinstance(summary, dict) and summary["token_f1"] > 0.5 and summary["refusal"] == 0
    _, b = await _run(rig, "--prompt", f"support@{worse}")
    assert b["failed_items"] == 0, b
    assert isinstance(b["summary"], dict) and b["summary"]["refusal"] == 1.0
    plain = await rig.cli(eval_group, "run", "--dataset", "golden", "--prompt", f"support@{equal}")
    assert plain.exit_code == 0, plain.output
    c_id = plain.stdout.split()[1]
    assert plain.stdout.startswith(f"run {c_id} finished\n")
    assert re.search(r"^token_f1\t0\.\d{4}$", plain.stdout, re.M)

    report = tmp_path / "report.md"
    # A margin of a point: equal prompts may still differ by a word on an item.
    gate = ("--no-regression", "token_f1:0.01", "--no-regression", "exact_match")
    failed = await rig.cli(
        eval_group, "compare", str(a["run_id"]), str(b["run_id"]), *gate, "--markdown", str(report)
    )
    assert failed.exit_code == 1, failed.output
    assert re.search(r"^FAIL --no-regression token_f1:0.01: delta -0\.\d+", failed.stdout, re.M)
    row = next(line for line in failed.stdout.splitlines() if line.startswith("token_f1\t"))
    assert row.split("\t")[-1] == "worse" and row.split("\t")[1] == "8"
    text = report.read_text()
    assert (
        text.startswith("### Evaluation: failed") and "❌ `--no-regression token_f1:0.01`" in text
    )
    assert "| `token_f1` | 8 |" in text and "🔴 worse" in text

    passed = await rig.cli(
        eval_group,
        "compare",
        str(a["run_id"]),
        c_id,
        *gate,
        "--fail-under",
        "token_f1=0.5",
        "--json",
    )
    assert passed.exit_code == 0, passed.output
    data = json.loads(passed.stdout)
    assert all(g["passed"] for g in data["gates"]) and len(data["gates"]) == 3
    f1 = next(m for m in data["metrics"] if m["metric"] == "token_f1")
    # Equal prompts answer alike; an item may still differ by a word (retrieval ties).
    assert abs(f1["delta"]) < 0.02 and f1["verdict"] == "no clear change"
    em = next(m for m in data["metrics"] if m["metric"] == "exact_match")
    assert em["test"] == "mcnemar" and em["p_value"] == 1.0

    runs = await rig.cli(eval_group, "runs", "--json")
    listed = {r["run_id"]: r for r in json.loads(runs.stdout)}
    assert {str(a["run_id"]), str(b["run_id"]), c_id} <= set(listed)
    assert listed[c_id]["prompt_version"] == "3" and listed[c_id]["status"] == "finished"


async def test_bad_input_is_refused_with_a_clear_reason(rig: Rig) -> None:
    unknown = await rig.cli(eval_group, "run", "--dataset", "no-such-set")
    assert unknown.exit_code == 2 and "cannot run: no dataset 'no-such-set'" in unknown.output
    await rig.cli(datasets, "push", str(GOLDEN), "--name", "golden", "--tenant", rig.tenant.name)
    version = await rig.cli(eval_group, "run", "--dataset", "golden", "--prompt", "default@99")
    assert version.exit_code == 2, version.output  # refused before any item is sent
    assert "cannot run:" in version.output and "has no version 99" in version.output
    label = await rig.cli(eval_group, "run", "--dataset", "golden", "--prompt", "default:nope")
    assert label.exit_code == 2 and "no label 'nope'" in label.output
    missing = await rig.cli(eval_group, "compare", "nope-a", "nope-b")
    assert missing.exit_code == 2 and "no run 'nope-a'" in missing.output
    gate = await rig.cli(eval_group, "compare", "a", "b", "--fail-under", "token_f1")
    assert gate.exit_code == 2 and "METRIC=VALUE" in gate.output


async def test_ab_reports_each_arm_with_its_significance(rig: Rig) -> None:
    """A split label's arms, told apart by the thumbs their users give, through `eval ab`."""
    nc = await nats.connect(rig.platform.nats_url)
    try:
        store = await PromptStore.open(nc.jetstream())
        for text in (GOOD, EQUAL):
            await store.push_text(
                text.replace("name: support", "name: ab-test"), rig.tenant.name, "t"
            )
        await store.split(rig.tenant.name, "ab-test", "production", {1: 50, 2: 50}, by="t")
    finally:
        await nc.close()
    await asyncio.sleep(0.5)  # the gateway's mirror follows within a moment
    arms: dict[str, int] = {}
    async with channel(rig.platform.addr("gateway")) as ch:
        gateway = gateway_pb2_grpc.GatewayStub(ch)
        for i in range(40):
            request = ask("What does the Falcon service store?", no_cache=True, prompt="ab-test")
            request.user = f"user-{i}"
            reply = await gateway.ChatOnce(request, metadata=rig.tenant.metadata, timeout=60)
            arm = reply.final.prompt_arm
            arms[arm] = arms.get(arm, 0) + 1
            thumbs = gateway_pb2.THUMBS_UP if arm == "v1" else gateway_pb2.THUMBS_DOWN
            await gateway.Feedback(
                gateway_pb2.FeedbackRequest(request_id=reply.final.request_id, thumbs=thumbs),
                metadata=rig.tenant.metadata,
                timeout=60,
            )
    assert set(arms) == {"v1", "v2"}, arms

    report: dict[str, Any] = {}
    for _ in range(60):  # until every request and judgement is in ClickHouse
        done = await rig.cli(eval_group, "ab", "--prompt", "ab-test", "--min-sample", "5", "--json")
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        found = {a["arm"]: a for a in report["arms"]}
        if {k: v["requests"] for k, v in found.items()} == arms and all(
            v["thumbs_up"] + v["thumbs_down"] == arms[k] for k, v in found.items()
        ):
            break
        await asyncio.sleep(0.5)
    found = {a["arm"]: a for a in report["arms"]}
    assert {k: v["requests"] for k, v in found.items()} == arms, report
    assert found["v1"]["thumbs_up_rate"] == 1.0 and found["v2"]["thumbs_up_rate"] == 0.0
    [versus] = report["comparisons"]
    assert (versus["baseline"], versus["arm"]) == ("v1", "v2")
    assert versus["thumbs_p"] < 0.001 and versus["sequential_p"] < 0.05
    assert "fewer thumbs-up" in versus["verdict"]

    few = await rig.cli(eval_group, "ab", "--prompt", "ab-test", "--min-sample", "1000")
    assert few.exit_code == 0, few.output
    assert re.search(r"^production v2 vs v1: not enough data", few.stdout, re.M), few.stdout
    header = few.stdout.splitlines()[0].split("\t")  # not a terminal: tab-separated lines
    assert header[:3] == ["label", "arm", "requests"]


async def test_drift_reports_what_it_checked_and_what_it_skipped(rig: Rig) -> None:
    checked = await rig.cli(eval_group, "drift", "--tenant", rig.tenant.name, "--json")
    assert checked.exit_code == 0, checked.output
    reply = json.loads(checked.stdout)
    skipped = " ".join(reply.get("skipped", []))
    # A fresh tenant has no reference window yet: every signal is skipped, and says why.
    assert "questions" in skipped and not reply.get("results"), reply
    bad = await rig.cli(eval_group, "drift", "--tenant", "Not A Tenant")
    assert bad.exit_code != 0
