"""Analytics on the whole platform: a chat and an ingested document, seen through `llmops sql`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

from llmops.grpcutil import channel
from llmops.v1 import gateway_pb2_grpc
from tests.e2e.gateway_support import FACT_DOC, ask, ingest, new_tenant
from tests.support import Platform


def _sql(platform: Platform, *args: str) -> str:
    result = platform.cli("sql", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def _wait_rows(platform: Platform, query: str, rows: int, timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        out = _sql(platform, query, "--format", "csv")
        if len(out.strip().splitlines()) - 1 >= rows or time.monotonic() > deadline:
            return out
        await asyncio.sleep(0.3)


async def test_a_chat_and_a_document_become_rows_an_analyst_can_query(
    platform: Platform,
) -> None:
    tenant = await new_tenant(platform)
    await ingest(platform, tenant.name, "falcon-notes", FACT_DOC)
    async with channel(platform.addr("gateway")) as ch:
        reply = await gateway_pb2_grpc.GatewayStub(ch).ChatOnce(
            ask("Which port does Falcon listen on for admin requests?", no_cache=True),
            metadata=tenant.metadata,
            timeout=60,
        )
    interactions = await _wait_rows(
        platform,
        "SELECT model_used, input_tokens, output_tokens, cache, status, cited_doc_ids "
        f"FROM interactions WHERE tenant = '{tenant.name}' AND status = 'OK'",
        1,
    )
    rows = list(csv.DictReader(io.StringIO(interactions)))
    assert len(rows) == 1, interactions
    assert rows[0]["model_used"] == reply.final.model_used
    assert int(rows[0]["input_tokens"]) == reply.final.usage.input_tokens
    assert int(rows[0]["output_tokens"]) == reply.final.usage.output_tokens
    assert rows[0]["status"] == "OK" and rows[0]["cache"] == "bypass"
    assert json.loads(rows[0]["cited_doc_ids"]) == ["falcon-notes"]

    documents = await _wait_rows(
        platform,
        f"SELECT doc_id, status, tokens FROM documents WHERE tenant = '{tenant.name}'",
        1,
    )
    as_json = json.loads(
        _sql(
            platform,
            f"SELECT doc_id, status, tokens FROM documents WHERE tenant = '{tenant.name}'",
            "--format",
            "json",
        )
    )
    assert len(as_json) == 1, documents
    assert as_json[0]["doc_id"] == "falcon-notes" and as_json[0]["status"] == "indexed"
    assert as_json[0]["tokens"] > 0


async def test_sql_with_a_tenant_sees_only_that_tenant_and_refuses_writes(
    platform: Platform,
) -> None:
    chat = platform.cli("chat", "Is anyone there?", "--tenant", "cli-sql", "--no-retrieval")
    assert chat.returncode == 0, chat.stdout + chat.stderr
    query = "SELECT DISTINCT tenant FROM interactions ORDER BY tenant"
    everyone = await _wait_rows(platform, query, 2)
    assert "cli-sql" in everyone and len(everyone.splitlines()) > 2  # several tenants
    mine = _sql(platform, query, "--tenant", "cli-sql", "--format", "csv")
    assert mine.splitlines() == ["tenant", "cli-sql"]
    nobody = _sql(platform, "SELECT tenant FROM interactions WHERE 0", "--format", "csv")
    assert nobody.splitlines() == ["tenant"]  # an empty result still names its columns
    refused = platform.cli("sql", "DROP TABLE interactions")
    assert refused.returncode == 1
    assert "PERMISSION_DENIED" in refused.stderr and "read-only" in refused.stderr
