"""The gateway serves product backends in any language: a Node.js client, stubs from proto/.

tests/node_client/chat_client.js (@grpc/grpc-js + @grpc/proto-loader, installed
by `make setup` from its lock file) calls `llmops.v1.Gateway/Chat` and `ChatOnce`
on the running platform with the local API key of tenant `default`.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from typing import Any

import pytest

from llmops.docclient import DocumentClient
from llmops.v1 import documents_pb2, events_pb2
from tests.support import ROOT, Platform

CLIENT = ROOT / "tests" / "node_client"
SCRIPT = CLIENT / "chat_client.js"
TENANT = "default"  # the tenant of the key `llmops up` writes to <data dir>/api-key
FACT = "The Kestrel K9 label printer must be recalibrated after every 1200 labels."
QUESTION = "How often must the Kestrel K9 label printer be recalibrated?"
TIMEOUT = 120.0


async def node_client(platform: Platform, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run chat_client.js; its exit code, the one JSON object it printed, its stderr."""
    node = shutil.which("node")
    if node is None or not (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and tests/node_client/node_modules are needed: run `make setup`")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        "--addr",
        platform.addr("gateway"),  # LLMOPS_GATEWAY_ADDR: settings.gateway_addr
        "--timeout",
        "60",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    lines = stdout.decode().splitlines()
    assert len(lines) == 1, (stdout, stderr)
    return proc.returncode or 0, json.loads(lines[0]), stderr.decode()


@pytest.fixture
async def kestrel_doc(docs: DocumentClient) -> str:
    """A small document of tenant `default`, indexed; its doc_id (unique per run)."""
    doc_id = f"node-client/kestrel-{uuid.uuid4().hex[:8]}.md"
    content = (
        "# Kestrel K9 label printer\n\n"
        "## Maintenance\n\n"
        f"{FACT} Use the calibration card that ships in the box.\n"
    )
    await docs.publish(
        documents_pb2.Document(
            tenant=TENANT,
            doc_id=doc_id,
            source=doc_id,
            title="Kestrel K9 label printer",
            content=content.encode(),
        )
    )
    outcomes = await docs.wait_for([(TENANT, doc_id)], TIMEOUT)
    assert outcomes[(TENANT, doc_id)].status == events_pb2.DOCUMENT_STATUS_INDEXED, outcomes
    return doc_id


async def test_node_streams_and_calls_unary_with_the_same_grounded_answer(
    platform: Platform, kestrel_doc: str, input_only: str
) -> None:
    code, out, stderr = await node_client(
        platform,
        "--key",
        platform.api_key,
        "--question",
        QUESTION,
        "--no-cache",
        "--guardrail-policy",
        input_only,
    )
    assert code == 0, (out, stderr)

    # Chat: deltas in order, then one final message, then the trailers.
    assert out["deltas"] > 1 and all(out["pieces"]), out
    assert out["events_after_final"] == 0, out
    assert out["text"] == "".join(out["pieces"])
    assert "1200 labels" in out["text"], out["text"]
    final = out["final"]
    assert any(c["doc_id"] == kestrel_doc for c in final["citations"]), final["citations"]
    assert final["usage"]["output_tokens"] > 0, final
    assert re.fullmatch(r"[0-9a-f]{32}", final["trace_id"]), final["trace_id"]
    assert final["cache"] == "CACHE_STATUS_BYPASS", final  # the request turned both caches off
    assert final["model_used"] == "triton/extractive_answerer", final
    assert final["overhead_ms"] >= 0, final
    assert "x-llmops-overhead-ms" in out["trailers"], out["trailers"]

    # ChatOnce: the same pipeline, unary — the same answer, as one text.
    once = out["once"]
    assert once["text"] == out["text"], (once["text"], out["text"])
    assert any(c["doc_id"] == kestrel_doc for c in once["final"]["citations"]), once
    assert once["final"]["usage"]["output_tokens"] > 0, once
    assert re.fullmatch(r"[0-9a-f]{32}", once["final"]["trace_id"]), once


async def test_node_with_a_wrong_key_is_unauthenticated(platform: Platform) -> None:
    code, out, stderr = await node_client(
        platform, "--key", f"wrong-{uuid.uuid4().hex}", "--question", QUESTION
    )
    assert code == 1, (out, stderr)
    assert out["error"]["rpc"] == "Chat", out
    assert out["error"]["code"] == "UNAUTHENTICATED", out
    assert out["error"]["code_number"] == 16, out


def test_the_client_loads_the_gateway_service_from_proto() -> None:
    """No platform needed: proto-loader reads gateway.proto (and its imports) from proto/."""
    node = shutil.which("node")
    if node is None or not (CLIENT / "node_modules").is_dir():
        pytest.fail("node and tests/node_client/node_modules are needed: run `make setup`")
    check = (
        "const G = require(process.argv[1]).loadGateway();"
        "const s = G.service;"
        "console.log(JSON.stringify({"
        "chat: [s.Chat.path, s.Chat.requestStream, s.Chat.responseStream],"
        "once: [s.ChatOnce.path, s.ChatOnce.requestStream, s.ChatOnce.responseStream]}));"
    )
    result = subprocess.run(
        [node, "-e", check, str(SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "chat": ["/llmops.v1.Gateway/Chat", False, True],
        "once": ["/llmops.v1.Gateway/ChatOnce", False, False],
    }
