"""Golden datasets on a real nats-server: strict parsing, content versions, immutability, CLI."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.js import JetStreamContext

from llmops.cli.evaluation import datasets
from llmops.evaluation.datasets import (
    DatasetError,
    DatasetItem,
    DatasetStore,
    dataset_version,
    parse_jsonl,
    parse_ref,
)

GOLDEN = Path(__file__).parent.parent / "data" / "evaluation" / "golden.jsonl"
Invoke = Callable[..., Awaitable[Result]]


def _tenant() -> str:
    return f"d{uuid.uuid4().hex[:10]}"


def _line(**fields: object) -> str:
    return json.dumps(fields)


@pytest.fixture
def invoke(nats_url: str, tmp_path: Path) -> Invoke:
    """`llmops datasets ...` in a worker thread (it runs its own event loop)."""

    async def run(*args: str) -> Result:
        env = {"LLMOPS_NATS_URL": nats_url, "LLMOPS_DATA_DIR": str(tmp_path)}
        return await asyncio.to_thread(CliRunner().invoke, datasets, list(args), env=env)

    return run


def test_every_field_is_read_and_ids_default_to_the_content_hash() -> None:
    text = "\n".join(
        [
            _line(
                id="q1",
                question="What is E-417?",
                variables={"tone": "formal"},
                expected_answer="A flow error.",
                expected_sources=["aurora.txt"],
            ),
            "",  # blank lines are allowed
            _line(question="Where is the cache?"),
        ]
    )
    first, second = parse_jsonl(text)
    assert first == DatasetItem(
        "q1", "What is E-417?", {"tone": "formal"}, "A flow error.", ("aurora.txt",)
    )
    assert second.question == "Where is the cache?" and len(second.id) == 12
    # The same line gets the same id in another file; another question another id.
    assert parse_jsonl(_line(question="Where is the cache?"))[0].id == second.id
    assert parse_jsonl(_line(question="Where is the log?"))[0].id != second.id


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"question": "ok"', "not valid JSON"),
        (_line(expected_answer="no question here"), "no question"),
        (_line(question="   "), "no question"),
        ('["a list"]', "expected a JSON object"),
        (_line(question="q", expected_sources="doc.txt"), "expected_sources must be a list"),
        (_line(question="q", variables={"n": 3}), "variables must map names to strings"),
        (_line(question="q", answer="typo of expected_answer"), "unknown field(s) answer"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(bad: str, message: str) -> None:
    text = "\n".join([_line(question="fine"), "", bad, _line(question="also fine")])
    with pytest.raises(DatasetError) as refused:
        parse_jsonl(text)
    assert str(refused.value).startswith("line 3:")
    assert message in str(refused.value)


def test_a_repeated_id_and_an_empty_file_are_refused() -> None:
    with pytest.raises(DatasetError, match="line 2: id 'x' repeats line 1"):
        parse_jsonl(_line(id="x", question="a") + "\n" + _line(id="x", question="b"))
    with pytest.raises(DatasetError, match="no items"):
        parse_jsonl("\n\n")


def test_references_name_a_dataset_and_maybe_a_version() -> None:
    assert parse_ref("golden") == ("golden", "")
    assert parse_ref("golden@0123456789ab") == ("golden", "0123456789ab")
    for bad in ("Golden", "golden@v2", "a/b"):
        with pytest.raises(DatasetError):
            parse_ref(bad)


async def test_versions_are_content_digests_stored_once_and_never_changed(
    js: JetStreamContext,
) -> None:
    store = await DatasetStore.open(js)
    tenant = _tenant()
    items = parse_jsonl(GOLDEN.read_text())
    first, created = await store.push(tenant, "golden", items, "alice")
    assert created and first.version == dataset_version(items) and first.items == len(items)

    again, created_again = await store.push(tenant, "golden", list(items), "bob")
    assert not created_again and again == first  # a no-op: same version, same record

    changed = [*items[:-1], DatasetItem("extra", "A new question?")]
    second, created = await store.push(tenant, "golden", changed, "bob")
    assert created and second.version != first.version

    old = await store.get(tenant, f"golden@{first.version}")
    assert old.items == tuple(items) and old.created_by == "alice"  # untouched by the push
    latest = await store.get(tenant, "golden")
    assert latest.version == second.version and latest.items[-1].id == "extra"
    assert [i.version for i in await store.list(tenant, "golden")] == [
        second.version,
        first.version,
    ]
    assert await store.list(_tenant()) == []  # another tenant sees none of it

    with pytest.raises(DatasetError, match="has no version"):
        await store.get(tenant, "golden@000000000000")
    with pytest.raises(DatasetError, match="no dataset 'nope'"):
        await store.get(tenant, "nope")


async def test_cli_push_list_show_and_a_bad_file_stores_nothing(
    invoke: Invoke, js: JetStreamContext, tmp_path: Path
) -> None:
    tenant = _tenant()
    pushed = await invoke("push", str(GOLDEN), "--name", "golden", "--tenant", tenant)
    assert pushed.exit_code == 0, pushed.output
    version = dataset_version(parse_jsonl(GOLDEN.read_text()))
    assert f"stored golden@{version} (8 items" in pushed.output
    again = await invoke("push", str(GOLDEN), "--name", "golden", "--tenant", tenant, "--json")
    assert json.loads(again.output)["created"] is False

    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line(question="fine") + "\n" + _line(question="fine too") + "\n{oops\n")
    refused = await invoke("push", str(bad), "--name", "broken", "--tenant", tenant)
    assert refused.exit_code == 2
    assert "nothing stored" in refused.output and "line 3: not valid JSON" in refused.output
    store = await DatasetStore.open(js)
    assert [i.name for i in await store.list(tenant)] == ["golden"]

    listed = await invoke("list", "--tenant", tenant)
    header, row = listed.output.splitlines()
    assert header.split("\t") == ["name", "version", "items", "created_at", "by"]
    assert row.split("\t")[:3] == ["golden", version, "8"]

    shown = await invoke("show", f"golden@{version}", "--tenant", tenant, "--json")
    data = json.loads(shown.output)
    assert data["version"] == version and data["items"][0]["id"] == "e417"
    missing = await invoke("show", "nothing-here", "--tenant", tenant)
    assert missing.exit_code == 1 and "no dataset 'nothing-here'" in missing.output
