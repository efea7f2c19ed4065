"""`llmops docs` against the catalog's real gRPC queries and a real nats-server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from llmops.bus.events import document_event, publish_document_event
from llmops.bus.topology import DOCS_DELETE, DOCS_IN_STREAM
from llmops.cli.docs import LIST_HEADER, docs
from llmops.v1 import documents_pb2, events_pb2
from tests.ingestion.catalog_rig import CatalogRig, catalog_rig

Invoke = Callable[..., Awaitable[Result]]
INDEXED = events_pb2.DOCUMENT_STATUS_INDEXED


@pytest.fixture(scope="module")
async def rig(js: JetStreamContext) -> AsyncIterator[CatalogRig]:
    async with catalog_rig(js) as r:
        yield r


@pytest.fixture
def invoke(rig: CatalogRig, nats_url: str, tmp_path: Path) -> Invoke:
    """Run `llmops docs ...` in a worker thread (it runs its own event loop)."""
    env = {
        "LLMOPS_INGESTION_ADDR": rig.addr,
        "LLMOPS_NATS_URL": nats_url,
        "LLMOPS_DATA_DIR": str(tmp_path),
    }

    async def run(*args: str) -> Result:
        return await asyncio.to_thread(CliRunner().invoke, docs, list(args), env=env)

    return run


async def _two_documents(rig: CatalogRig) -> str:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    await rig.publish(INDEXED, tenant, "b.md", 2, collection="kb", chunks=4, tokens=900)
    await rig.publish(INDEXED, tenant, "a b.md", 1, collection="kb", chunks=1, tokens=10)
    await rig.settled()
    return tenant


async def test_list_prints_tab_separated_lines_off_a_terminal(
    rig: CatalogRig, invoke: Invoke
) -> None:
    tenant = await _two_documents(rig)
    result = await invoke("list", "--tenant", tenant)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == list(LIST_HEADER)
    first, second = (line.split("\t") for line in lines[1:])
    assert len(lines) == 3 and len(first) == len(LIST_HEADER)
    assert first[:8] == ["a b.md", "kb", "indexed", "1", "1", "1", "10", "0"]
    assert second[:8] == ["b.md", "kb", "indexed", "2", "1", "4", "900", "0"]
    assert result.stderr == ""


async def test_list_pages_and_json(rig: CatalogRig, invoke: Invoke) -> None:
    tenant = await _two_documents(rig)
    first = await invoke("list", "--tenant", tenant, "--page-size", "1", "--json")
    assert first.exit_code == 0, first.output
    page = json.loads(first.stdout)
    assert [d["doc_id"] for d in page["documents"]] == ["a b.md"]
    assert page["documents"][0]["status"] == "indexed"
    assert page["documents"][0]["last_error"] == ""  # zeros and empties are printed too
    token = page["next_page_token"]
    second = await invoke("list", "--tenant", tenant, "--page-size", "1", "--page-token", token)
    assert second.stdout.splitlines()[1].startswith("b.md\t")
    assert "more documents" not in second.stderr
    every = await invoke("list", "--tenant", tenant, "--page-size", "1", "--all", "--json")
    assert [d["doc_id"] for d in json.loads(every.stdout)["documents"]] == ["a b.md", "b.md"]
    plain = await invoke("list", "--tenant", tenant, "--page-size", "1")
    assert f"--page-token {token}" in plain.stderr
    broken = await invoke("list", "--tenant", tenant, "--page-token", "garbage!")
    assert broken.exit_code == 1 and "INVALID_ARGUMENT: invalid page_token" in broken.stderr


async def test_show_and_not_found(rig: CatalogRig, invoke: Invoke) -> None:
    tenant = await _two_documents(rig)
    shown = await invoke("show", "b.md", "--tenant", tenant)
    assert shown.exit_code == 0, shown.output
    fields = dict(line.split("\t", 1) for line in shown.stdout.splitlines())
    assert fields["field"] == "value"
    assert (fields["doc_id"], fields["status"], fields["chunks"], fields["tenant"]) == (
        "b.md",
        "indexed",
        "4",
        tenant,
    )
    as_json = json.loads((await invoke("show", "b.md", "--tenant", tenant, "--json")).stdout)
    assert (as_json["version"], as_json["tokens"], as_json["collection"]) == ("2", 900, "kb")
    missing = await invoke("show", "b.md", "--tenant", tenant + "x")
    assert missing.exit_code == 1
    assert f"NOT_FOUND: no document 'b.md' in tenant '{tenant}x'" in missing.stderr
    refused = await invoke("show", "../etc", "--tenant", tenant)
    assert refused.exit_code == 2 and "'..' segment" in refused.stderr


async def test_delete_publishes_and_waits_for_the_outcome(
    rig: CatalogRig, invoke: Invoke, js: JetStreamContext
) -> None:
    tenant = await _two_documents(rig)

    async def retrieval_removes_it(msg: Msg) -> None:
        request = documents_pb2.DeleteDocument.FromString(msg.data)
        tombstone = documents_pb2.ChunkedDocument(
            tenant=request.tenant, doc_id=request.doc_id, version=3, deleted=True
        )
        deleted = events_pb2.DOCUMENT_STATUS_DELETED
        await publish_document_event(js, document_event("retrieval", deleted, tombstone))

    sub = await js._nc.subscribe(DOCS_DELETE, cb=retrieval_removes_it)
    try:
        result = await invoke("delete", "b.md", "--tenant", tenant, "--wait", "--timeout", "10")
    finally:
        await sub.unsubscribe()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"delete of {tenant}/b.md published",
        f"{tenant}/b.md: deleted",
    ]
    stored = await js.get_last_msg(DOCS_IN_STREAM.name, DOCS_DELETE)
    assert documents_pb2.DeleteDocument.FromString(stored.data) == documents_pb2.DeleteDocument(
        tenant=tenant, doc_id="b.md"
    )
    await rig.settled()
    listed = await invoke("list", "--tenant", tenant)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()[1:]] == ["a b.md"]
    with_deleted = await invoke("list", "--tenant", tenant, "--include-deleted", "--json")
    statuses = {d["doc_id"]: d["status"] for d in json.loads(with_deleted.stdout)["documents"]}
    assert statuses == {"a b.md": "indexed", "b.md": "deleted"}
