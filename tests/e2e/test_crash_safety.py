"""kill -9 any service mid-ingest: after the supervisor restarts it, every document is
searchable exactly once (no missing chunk, no duplicate); state survives a full restart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.pipeline import DocumentPipeline
from llmops.docclient import DocumentClient
from llmops.grpcutil import channel
from llmops.processes import process_alive
from llmops.v1 import documents_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc
from tests.support import ROOT, Platform, run_platform

DOCS = 60
TENANT = "crash"


def document(i: int) -> documents_pb2.Document:
    # ~6 chunks each, distinct words per document so every chunk is a separate point.
    sentences = " ".join(
        f"Record {i} paragraph {p} lists part number P{i:03d}-{p} stored in aisle {p * 7 + i}."
        for p in range(60)
    )
    return documents_pb2.Document(
        tenant=TENANT,
        doc_id=f"doc-{i:03d}",
        source=f"doc-{i:03d}.txt",
        content=sentences.encode(),
        metadata={"doc": f"doc-{i:03d}"},
    )


@pytest.fixture(scope="module")
def crash_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    # Short ack_wait: messages held by a killed consumer come back within seconds.
    with run_platform(
        tmp_path_factory.mktemp("crash") / "data",
        triton=False,
        extra_env={"LLMOPS_ACK_WAIT_S": "4"},
    ) as p:
        yield p


async def chunks_of(
    stub: retrieval_pb2_grpc.RetrievalStub, doc_id: str
) -> list[retrieval_pb2.SearchHit]:
    reply = await stub.Search(
        retrieval_pb2.SearchRequest(
            tenant=TENANT,
            query="part number aisle",
            top_k=1000,
            mode=retrieval_pb2.SEARCH_MODE_DENSE,
            filters={"doc": doc_id},
        ),
        timeout=30,
    )
    return list(reply.hits)


def expected_chunks(documents: list[documents_pb2.Document]) -> dict[str, int]:
    """How many chunks each document must have, computed independently of the platform."""
    pipeline = DocumentPipeline(
        ROOT / "models" / "all-MiniLM-L6-v2" / "tokenizer.json", 10**7, 200, 32
    )
    return {d.doc_id: len(pipeline.chunk(d, pipeline.prepare(d), 1).chunks) for d in documents}


async def assert_exactly_once(platform: Platform, expected: dict[str, int]) -> None:
    """Every chunk of every document is searchable, once (waiting out in-flight redeliveries)."""
    async with channel(platform.addr("retrieval")) as ch:
        stub = retrieval_pb2_grpc.RetrievalStub(ch)
        for doc_id, n in expected.items():
            for _ in range(300):
                hits = await chunks_of(stub, doc_id)
                if len(hits) >= n:
                    break
                await asyncio.sleep(0.2)
            assert len(hits) == n, f"{doc_id}: {len(hits)} chunks, expected {n}"
            assert sorted(h.index for h in hits) == list(range(n)), doc_id
            assert len({h.chunk_id for h in hits}) == n, doc_id


@pytest.mark.parametrize("victim", ["embedding", "retrieval", "ingestion"])
async def test_kill_9_mid_ingest_loses_and_duplicates_nothing(
    crash_platform: Platform, victim: str
) -> None:
    client = await DocumentClient.connect(crash_platform.nats_url)
    await client.watch()
    batch = [document(i) for i in range(DOCS)]
    for d in batch:
        d.doc_id = f"{victim}-{d.doc_id}"
        d.metadata["doc"] = d.doc_id
    try:
        for d in batch:
            await client.publish(d)
        outcomes = await client.wait_for([(TENANT, batch[0].doc_id)], 120)  # mid-ingest now
        old_pid = crash_platform.pid(victim)
        os.kill(old_pid, signal.SIGKILL)
        await asyncio.to_thread(crash_platform.wait_restarted, victim, old_pid)
        outcomes |= await client.wait_for([(TENANT, d.doc_id) for d in batch[1:]], 240)
    finally:
        await client.close()
    # A redelivery after the kill may report UNCHANGED (already chunked) before INDEXED.
    assert {e.status for e in outcomes.values()} <= {
        events_pb2.DOCUMENT_STATUS_INDEXED,
        events_pb2.DOCUMENT_STATUS_UNCHANGED,
    }
    expected = expected_chunks(batch)
    assert all(n >= 3 for n in expected.values())
    await assert_exactly_once(crash_platform, expected)
    assert f"{victim}" in crash_platform.log() and "restart #" in crash_platform.log()


async def test_state_survives_a_full_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_platform(data, triton=False) as first:
        client = await DocumentClient.connect(first.nats_url)
        await client.watch()
        d = document(1)
        await client.publish(d)
        outcome = await client.wait_for([(TENANT, d.doc_id)], 120)
        await client.close()
        n = outcome[(TENANT, d.doc_id)].chunks
        assert n == expected_chunks([d])[d.doc_id]
        env = first.env
        again = first.cli("up", timeout=30)
        assert again.returncode == 1 and "already running" in again.stderr
        children = [int(pid) for pid in first.state()["pids"].values()]  # type: ignore[union-attr]
        down = first.cli("down")
        assert down.returncode == 0 and "stopped" in down.stdout
        assert first.proc.wait(5) == 0  # `llmops up` stopped cleanly
        assert not [pid for pid in children if process_alive(pid)]
    assert not (data / "platform.json").exists()
    with run_platform(data, env=env) as second:
        await assert_exactly_once(second, {d.doc_id: n})
        status = second.cli("status")
        assert status.returncode == 0, status.stdout + status.stderr


async def test_search_when_the_embedding_service_is_down(crash_platform: Platform) -> None:
    """Retrieval embeds queries itself (LLMOPS_QUERY_EMBEDDING=local): every search mode keeps
    answering with the embedding service hung; `llmops status` says it is down. (The remote
    form's clear UNAVAILABLE is tests/retrieval/test_query_embedding.py's.)"""
    client = await DocumentClient.connect(crash_platform.nats_url)
    await client.watch()
    d = document(7)
    d.doc_id = "down-test"
    await client.publish(d)
    await client.wait_for([(TENANT, d.doc_id)], 120)
    await client.close()
    pid = crash_platform.pid("embedding")
    os.kill(pid, signal.SIGSTOP)  # hung, not dead: the supervisor does not restart it
    try:
        async with channel(crash_platform.addr("retrieval")) as ch:
            stub = retrieval_pb2_grpc.RetrievalStub(ch)
            request = retrieval_pb2.SearchRequest(tenant=TENANT, query="part number", top_k=3)
            for mode in (retrieval_pb2.SEARCH_MODE_HYBRID, retrieval_pb2.SEARCH_MODE_SPARSE):
                request.mode = mode
                assert len((await stub.Search(request, timeout=30)).hits) == 3
        status = crash_platform.cli("status")
        assert status.returncode == 1 and "down" in status.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
