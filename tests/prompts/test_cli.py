"""`llmops prompts` end to end: the installed command, as a process, on a real nats-server."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from llmops.prompts.model import parse_prompts_file

LLMOPS = Path(sys.executable).parent / "llmops"
Run = Callable[..., Awaitable[subprocess.CompletedProcess[str]]]

FILE = """\
prompts:
  - name: support
    description: first try
    params: {temperature: 0.2}
    defaults: {tone: friendly}
    system: Be {tone}.
    user: |-
      {context}

      Q: {question}
"""


@pytest.fixture
def llmops(nats_url: str, tmp_path: Path) -> Run:
    env = {**os.environ, "LLMOPS_NATS_URL": nats_url, "LLMOPS_DATA_DIR": str(tmp_path)}

    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [str(LLMOPS), "prompts", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def _rows(stdout: str) -> list[list[str]]:
    return [line.split("\t") for line in stdout.splitlines()]


async def test_push_label_split_rollback_history_export(
    llmops: Run, tmp_path: Path, js: JetStreamContext
) -> None:
    tenant = f"c{uuid.uuid4().hex[:10]}"
    first, second = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    first.write_text(FILE)
    second.write_text(
        FILE.replace("Be {tone}.", "Be {tone} and brief.") + "    labels: [staging]\n"
    )

    pushed = await llmops("push", str(first), "--tenant", tenant)
    assert pushed.returncode == 0, pushed.stderr
    assert _rows(pushed.stdout) == [
        ["name", "version", "stored", "labels moved"],
        ["support", "v1", "new", "production"],
    ]
    pushed = await llmops("push", str(second), "--tenant", tenant, "--json")
    assert json.loads(pushed.stdout) == [
        {"name": "support", "version": 2, "created": True, "labels": ["staging"]}
    ]

    listed, shown, shown_json, diff = await asyncio.gather(  # reads: at once
        llmops("list", "--tenant", tenant),
        llmops("show", "support:staging", "--tenant", tenant),
        llmops("show", "support@1", "--tenant", tenant, "--json"),
        llmops("diff", "support", "production", "staging", "--tenant", tenant),
    )
    rows = {row[0]: row for row in _rows(listed.stdout)}
    assert rows["name"] == ["name", "tenant", "latest", "labels", "description"]
    assert rows["support"] == ["support", tenant, "v2", "production=v1 staging=v2", "first try"]

    assert shown.stdout.startswith(f"# {tenant}/support v2, labels: staging, latest\n")
    assert "variables: tone" in shown.stdout
    (entry,) = parse_prompts_file(shown.stdout)  # what show prints, push takes back
    assert entry.system == "Be {tone} and brief."
    as_json = json.loads(shown_json.stdout)
    by = f"cli:{getpass.getuser()}"
    assert (as_json["version"], as_json["labels"], as_json["created_by"]) == (1, ["production"], by)

    assert "-  system: Be {tone}.\n+  system: Be {tone} and brief.\n" in diff.stdout

    labelled = await llmops("label", "support", "v2", "--as", "production", "--tenant", tenant)
    assert labelled.stdout == "support:production v1 -> v2\n", labelled.stderr
    split = await llmops("split", "support", "canary", "v1=30", "v2=70", "--tenant", tenant)
    assert split.stdout == "support:canary - -> v1:30,v2:70\n", split.stderr
    rolled = await llmops("rollback", "support", "production", "--tenant", tenant, "--json")
    assert json.loads(rolled.stdout) == {
        "name": "support",
        "label": "production",
        "arms": [{"version": 1, "weight": 100}],
    }

    out = tmp_path / "exported.yaml"
    history_run, exported = await asyncio.gather(
        llmops("history", "support", "--tenant", tenant),
        llmops("export", "--tenant", tenant, "-o", str(out)),
    )
    history = _rows(history_run.stdout)
    assert history[0] == ["at", "by", "label", "action", "from", "to"]
    assert [row[2:] for row in history[1:]] == [
        ["production", "push", "-", "v1"],
        ["staging", "push", "-", "v2"],
        ["production", "label", "v1", "v2"],
        ["canary", "split", "-", "v1:30,v2:70"],
        ["production", "rollback", "v2", "v1"],
    ]
    assert {row[1] for row in history[1:]} == {by}

    assert exported.returncode == 0 and exported.stdout == f"wrote {out}\n"
    (back,) = parse_prompts_file(out.read_text())
    assert (back.name, back.labels, back.system) == ("support", ["staging"], "Be {tone} and brief.")
    repushed = await llmops("push", str(out), "--tenant", tenant)
    assert _rows(repushed.stdout)[1] == ["support", "v2", "unchanged", "-"]


async def test_errors_are_clear_and_exit_non_zero(llmops: Run, tmp_path: Path) -> None:
    tenant = f"e{uuid.uuid4().hex[:10]}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(FILE + "  - name: broken\n    user: no question\n")
    result = await llmops("push", str(bad), "--tenant", tenant)
    assert result.returncode == 1
    assert "nothing stored" in result.stderr
    assert "prompts[1] (broken).user: must contain {question}" in result.stderr
    listed = await llmops("list", "--tenant", tenant, "--json")
    assert [p["tenant"] for p in json.loads(listed.stdout)].count(tenant) == 0

    good = tmp_path / "good.yaml"
    good.write_text(FILE)
    assert (await llmops("push", str(good), "--tenant", tenant)).returncode == 0
    failures = await asyncio.gather(
        llmops("show", "nope", "--tenant", tenant),
        llmops("show", "support@7", "--tenant", tenant),
        llmops("split", "support", "production", "v1=60", "v1=40", "--tenant", tenant),
        llmops("split", "support", "production", "v1=100", "--tenant", tenant),
        llmops("label", "support", "1", "--as", "latest", "--tenant", tenant),
        llmops("rollback", "support", "production", "--tenant", tenant),
    )
    messages = [
        "unknown prompt 'nope'; prompts: ",
        "prompt 'support' has no version 7; versions: v1",
        "split: version 1 is named twice",
        "name at least two versions",
        "cannot be set",
        "no earlier version to roll back to",
    ]
    for failure, message in zip(failures, messages, strict=True):
        assert failure.returncode != 0 and message in failure.stderr, failure.stderr
        assert "Traceback" not in failure.stderr
