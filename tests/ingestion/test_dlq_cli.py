"""`llmops dlq` on real dead letters: the ingestion service (a process, on a real
nats-server) refuses a payload that is no Document and a document with a bad doc id;
the CLI lists them by tenant (never the payload), shows one, writes its payload out
and replays it: ingestion handles it once more (it refuses it again, one new letter),
and replaying the same id again is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.js import JetStreamContext

from llmops.bus.topology import DOCS_INGEST
from llmops.cli.dlq import LIST_HEADER, dlq
from llmops.deadletters import NOT_FOUND, REPLAY_OF
from llmops.ids import UNKNOWN_TENANT
from llmops.v1 import documents_pb2
from tests.support import ServiceProcess

TIMEOUT_S = 20
GARBAGE = b"\xff\xfe not a Document \x00"
BAD_DOC = documents_pb2.Document(
    tenant="cli-t", doc_id="a/../b", content=b"hello", content_type="text/plain"
).SerializeToString()

Cli = Callable[..., Awaitable[Result]]


@pytest.fixture(scope="module")
def cli(nats_url: str) -> Cli:
    async def run(*args: str) -> Result:
        env = {"LLMOPS_NATS_URL": nats_url}
        return await asyncio.to_thread(CliRunner().invoke, dlq, list(args), env=env)

    return run


async def _letters(cli: Cli, *args: str) -> list[dict[str, object]]:
    result = await cli("list", "--json", *args)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout).get("letters", []))


async def _until_listed(cli: Cli, count: int, *args: str) -> list[dict[str, object]]:
    for _ in range(TIMEOUT_S * 10):
        letters = await _letters(cli, *args)
        if len(letters) >= count:
            return letters
        await asyncio.sleep(0.1)
    raise TimeoutError(f"fewer than {count} letters for {args}")


async def test_real_letters_are_listed_shown_and_replayed_once(
    ingestion: ServiceProcess, js: JetStreamContext, cli: Cli, tmp_path: Path
) -> None:
    await js.publish(DOCS_INGEST, GARBAGE)
    await js.publish(DOCS_INGEST, BAD_DOC)
    [unknown] = await _until_listed(cli, 1, "--tenant", UNKNOWN_TENANT)
    [bad] = await _until_listed(cli, 1, "--tenant", "cli-t")
    assert unknown["letter"]["stage"] == "ingestion"  # type: ignore[index]
    assert "tenant" not in unknown["letter"]  # type: ignore[operator]
    assert "payload" not in bad["letter"] and bad["payload_bytes"] == str(len(BAD_DOC))  # type: ignore[operator]
    assert "'..' segment" in bad["letter"]["reason"]  # type: ignore[index]

    table = await cli("list", "--stage", "ingestion")  # not a terminal: tab-separated
    lines = table.stdout.splitlines()
    assert lines[0].split("\t") == list(LIST_HEADER)
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:]}
    assert rows[str(unknown["id"])][3] == UNKNOWN_TENANT
    assert rows[str(bad["id"])][3:5] == ["cli-t", "-"]  # the bad doc id is not recorded
    assert "not a Document" not in table.stdout  # lists never show payloads

    shown = await cli("show", str(unknown["id"]), "--payload", str(tmp_path / "p.bin"))
    assert shown.exit_code == 0, shown.output
    assert f"payload: {len(GARBAGE)} bytes, sha256 " in shown.stdout and "reason: " in shown.stdout
    assert (tmp_path / "p.bin").read_bytes() == GARBAGE

    replayed = await cli("replay", str(bad["id"]))
    assert (replayed.exit_code, replayed.stdout) == (0, f"replayed {bad['id']}\n")
    # Ingestion handled it again, through its normal path: it refused it again, once.
    for _ in range(TIMEOUT_S * 10):
        again = await _letters(cli, "--tenant", "cli-t")
        if again and again[0]["id"] != bad["id"]:
            break
        await asyncio.sleep(0.1)
    assert len(again) == 1 and int(str(again[0]["id"])) > int(str(bad["id"]))
    new = await cli("show", str(again[0]["id"]))
    assert f"{REPLAY_OF}: {bad['id']}" in new.stdout

    twice = await cli("replay", str(bad["id"]))
    assert twice.exit_code == 1
    assert f"refused {bad['id']}: {NOT_FOUND}" in twice.stderr
    await asyncio.sleep(1.0)
    assert [e["id"] for e in await _letters(cli, "--tenant", "cli-t")] == [again[0]["id"]]


async def test_bad_options_are_refused_with_the_rule(cli: Cli) -> None:
    bad_tenant = await cli("list", "--tenant", "../etc")
    assert bad_tenant.exit_code == 2 and "1-63 of a-z 0-9" in bad_tenant.stderr
    bad_stage = await cli("replay", "--all", "--stage", "nope")
    assert bad_stage.exit_code == 2 and "unknown stage 'nope'" in bad_stage.stderr
    neither = await cli("replay")
    assert neither.exit_code == 2 and "give letter ids or --all" in neither.stderr
    missing = await cli("show", "999999")
    assert missing.exit_code == 1 and NOT_FOUND in missing.stderr
