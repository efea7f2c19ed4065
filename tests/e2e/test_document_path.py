"""End to end: documents published on NATS become searchable over gRPC, on the real platform.

Each test uses its own tenant, so tests share one platform without seeing each other.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
from fpdf import FPDF

from llmops.docclient import DocumentClient
from llmops.grpcutil import channel
from llmops.v1 import (
    documents_pb2,
    events_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.support import Platform

INDEXED = events_pb2.DOCUMENT_STATUS_INDEXED
TIMEOUT = 120.0


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def make_pdf(path: Path) -> bytes:
    pdf = FPDF()
    pdf.set_font("helvetica", size=11)
    pages = [
        (
            "Orchard pruning calendar",
            "Prune apple trees in late winter, between January and March, "
            "while the trees are dormant. Remove dead, diseased and crossing branches first, "
            "then thin the crown so that light reaches the centre of the tree.",
        ),
        (
            "Cherry trees",
            "Cherry trees are pruned in summer, right after harvest, because winter "
            "cuts invite silver leaf disease. Seal large cuts is not necessary; clean tools are.",
        ),
    ]
    for title, text in pages:
        pdf.add_page()
        pdf.set_font("helvetica", "B", 14)
        pdf.multi_cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path.read_bytes()


def doc(t: str, doc_id: str, content: bytes, source: str, **meta: str) -> documents_pb2.Document:
    return documents_pb2.Document(
        tenant=t, doc_id=doc_id, source=source, content=content, metadata=meta
    )


async def search(
    stub: retrieval_pb2_grpc.RetrievalStub,
    t: str,
    query: str,
    k: int = 5,
    mode: int = retrieval_pb2.SEARCH_MODE_HYBRID,
    **filters: str,
) -> list[retrieval_pb2.SearchHit]:
    reply = await stub.Search(
        retrieval_pb2.SearchRequest(tenant=t, query=query, top_k=k, mode=mode, filters=filters),
        timeout=30,
    )
    return list(reply.hits)


async def ingest(client: DocumentClient, *documents: documents_pb2.Document) -> dict[str, int]:
    """Publish and wait; returns doc_id -> status."""
    for d in documents:
        await client.publish(d)
    outcomes = await client.wait_for([(d.tenant, d.doc_id) for d in documents], TIMEOUT)
    return {doc_id: e.status for (_, doc_id), e in outcomes.items()}


@pytest.fixture
async def four_formats(docs: DocumentClient, sample_dir: Path, tmp_path: Path) -> str:
    t = tenant()
    published = [
        doc(
            t, "aurora", (sample_dir / "aurora-heat-pump.txt").read_bytes(), "aurora-heat-pump.txt"
        ),
        doc(t, "handbook", (sample_dir / "travel-handbook.md").read_bytes(), "travel-handbook.md"),
        doc(t, "zephyr", (sample_dir / "zephyr-bicycle.html").read_bytes(), "zephyr-bicycle.html"),
        doc(t, "orchard", make_pdf(tmp_path / "orchard.pdf"), "orchard.pdf"),
    ]
    assert await ingest(docs, *published) == {d.doc_id: INDEXED for d in published}
    return t


@pytest.mark.parametrize(
    ("query", "doc_id", "needle"),
    [
        ("how long does the defrost cycle of the heat pump last", "aurora", "two to six minutes"),
        ("how much money do I get for meals per day on a business trip", "handbook", "45 euros"),
        ("how often should I oil my bike chain", "zephyr", "500 kilometres"),
        ("when should cherry trees be pruned", "orchard", "after harvest"),
    ],
)
async def test_each_format_is_searchable_and_the_right_chunk_ranks_first(
    four_formats: str,
    retrieval: retrieval_pb2_grpc.RetrievalStub,
    query: str,
    doc_id: str,
    needle: str,
) -> None:
    hits = await search(retrieval, four_formats, query)
    assert hits, "no results"
    assert hits[0].doc_id == doc_id
    assert needle in hits[0].text
    assert hits[0].score >= hits[-1].score


async def test_html_noise_and_markdown_headings(
    four_formats: str, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    noise = await search(
        retrieval, four_formats, "cookie banner tracking script navigation menu", k=50
    )
    assert all("tracking-script" not in h.text and "navigation menu" not in h.text for h in noise)
    hotel = await search(retrieval, four_formats, "hotel nightly limit in London")
    assert hotel[0].doc_id == "handbook"
    assert "Hotels" in hotel[0].heading


async def test_exact_codes_are_found_by_words_in_sparse_and_hybrid(
    four_formats: str, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    for mode in (retrieval_pb2.SEARCH_MODE_SPARSE, retrieval_pb2.SEARCH_MODE_HYBRID):
        hits = await search(retrieval, four_formats, "E-902", mode=mode)
        assert "E-902" in hits[0].text


async def test_tenant_isolation(
    four_formats: str, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    other = tenant()
    for mode in (
        retrieval_pb2.SEARCH_MODE_HYBRID,
        retrieval_pb2.SEARCH_MODE_DENSE,
        retrieval_pb2.SEARCH_MODE_SPARSE,
    ):
        assert await search(retrieval, other, "error code E-417 heat pump", k=50, mode=mode) == []


async def test_metadata_filters(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub, sample_dir: Path
) -> None:
    t = tenant()
    text = (sample_dir / "aurora-heat-pump.txt").read_bytes()
    await ingest(
        docs,
        doc(t, "eu", text, "eu.txt", region="eu"),
        doc(t, "us", text.replace(b"Aurora", b"Boreal"), "us.txt", region="us"),
    )
    hits = await search(retrieval, t, "defrost cycle", k=20, region="us")
    assert hits and {h.doc_id for h in hits} == {"us"}


async def test_republish_is_a_noop_and_a_new_version_replaces_the_old(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    t = tenant()
    v1 = doc(t, "faq", b"The office closes at 6 pm on Fridays. Parking is in garage B.", "faq.txt")
    assert await ingest(docs, v1) == {"faq": INDEXED}
    assert await ingest(docs, v1) == {"faq": events_pb2.DOCUMENT_STATUS_UNCHANGED}
    hits = await search(retrieval, t, "when does the office close", k=50, doc="x")
    assert hits == []  # the filter matches nothing: metadata filters are exact
    before = await search(retrieval, t, "when does the office close", k=50)
    assert len(before) == 1
    v2 = doc(t, "faq", b"The office closes at 4 pm on Fridays. Parking is in garage C.", "faq.txt")
    assert await ingest(docs, v2) == {"faq": INDEXED}
    after = await search(retrieval, t, "when does the office close", k=50)
    assert [h.text for h in after] == [
        "The office closes at 4 pm on Fridays. Parking is in garage C."
    ]
    assert after[0].version == before[0].version + 1


async def test_delete_removes_the_document(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    t = tenant()
    await ingest(docs, doc(t, "memo", b"The secret launch date is the ninth of May.", "memo.txt"))
    assert await search(retrieval, t, "launch date")
    await docs.delete(t, "memo")
    outcome = await docs.wait_for([(t, "memo")], TIMEOUT)
    assert outcome[(t, "memo")].status == events_pb2.DOCUMENT_STATUS_DELETED
    assert await search(retrieval, t, "launch date", k=50) == []
    # publishing it again after the delete brings it back as a newer version
    assert await ingest(docs, doc(t, "memo", b"The launch moved to June.", "memo.txt")) == {
        "memo": INDEXED
    }
    assert [h.text for h in await search(retrieval, t, "launch date")] == [
        "The launch moved to June."
    ]


async def test_grpc_ingest_and_delete(
    platform: Platform, docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    t = tenant()
    async with channel(platform.addr("ingestion")) as ch:
        stub = ingestion_pb2_grpc.IngestionStub(ch)
        reply = await stub.Ingest(
            ingestion_pb2.IngestRequest(
                documents=[doc(t, "rpc", b"# Parking\n\nVisitors park in garage D.", "rpc.md")]
            ),
            timeout=10,
        )
        assert list(reply.doc_ids) == ["rpc"]
        assert (await docs.wait_for([(t, "rpc")], TIMEOUT))[(t, "rpc")].status == INDEXED
        assert (await search(retrieval, t, "where do visitors park"))[0].heading == "Parking"
        await stub.Delete(ingestion_pb2.DeleteRequest(tenant=t, doc_ids=["rpc"]), timeout=10)
        outcome = await docs.wait_for([(t, "rpc")], TIMEOUT)
        assert outcome[(t, "rpc")].status == events_pb2.DOCUMENT_STATUS_DELETED
        with pytest.raises(grpc.aio.AioRpcError) as missing_id:
            await stub.Ingest(ingestion_pb2.IngestRequest(documents=[doc(t, "", b"x", "x.txt")]))
        assert missing_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (retrieval_pb2.SearchRequest(query="  "), "query is empty"),
        (retrieval_pb2.SearchRequest(query="x", top_k=5000), "top_k must be between 1 and 1000"),
        (retrieval_pb2.SearchRequest(query="x", top_k=-1), "top_k must be between 1 and 1000"),
    ],
)
async def test_invalid_searches_are_refused_clearly(
    retrieval: retrieval_pb2_grpc.RetrievalStub,
    request_: retrieval_pb2.SearchRequest,
    message: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await retrieval.Search(request_, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")


async def test_the_publishers_trace_runs_through_every_stage(docs: DocumentClient) -> None:
    """A W3C traceparent on the published message reaches the event retrieval emits."""
    t = tenant()
    trace_id = uuid.uuid4().hex
    traced = doc(t, "traced", b"Trace me through ingestion, embedding and retrieval.", "t.txt")
    await docs.js.publish(
        "llmops.docs.ingest",
        traced.SerializeToString(),
        headers={"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"},
    )
    event = (await docs.wait_for([(t, "traced")], TIMEOUT))[(t, "traced")]
    assert (event.status, event.stage) == (INDEXED, "retrieval")
    assert event.trace_id == trace_id
