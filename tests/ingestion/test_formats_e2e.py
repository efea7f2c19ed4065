"""End to end: every sample format published on the bus is searchable over gRPC.

One tenant of its own on the session platform; the samples are published as
`llmops ingest` would (content type from the file name), and the right
document must rank first for a question only its text answers.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from llmops.docclient import DocumentClient, document_from_file
from llmops.v1 import events_pb2, retrieval_pb2, retrieval_pb2_grpc

SAMPLES = Path(__file__).parents[1] / "data" / "formats"
QUESTIONS = {
    "boiler-manual.docx": ("how often should the boiler heat exchanger be descaled", "18 months"),
    "quarterly-review.pptx": ("when does the Rotterdam warehouse open", "40 loading docks"),
    "inventory.xlsx": ("how many titanium torque wrenches are in stock", "KX-7734"),
    "coffee-prices.csv": ("price per kg of the Panama Geisha coffee", "64.00"),
    "release-notes.json": ("parquet export loses the timezone offset", "Parquet"),
    "grinder-repair.eml": ("when will the courier collect the espresso grinder", "Thursday"),
}


async def test_every_sample_format_is_indexed_and_found(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    tenant = f"fmt-{uuid.uuid4().hex[:8]}"
    for name in QUESTIONS:
        await docs.publish(document_from_file(SAMPLES / name, name, tenant, "default", {}))
    outcomes = await docs.wait_for([(tenant, name) for name in QUESTIONS], 120.0)
    assert {doc_id: event.status for (_, doc_id), event in outcomes.items()} == dict.fromkeys(
        QUESTIONS, events_pb2.DOCUMENT_STATUS_INDEXED
    ), [event.reason for event in outcomes.values() if event.reason]
    for name, (question, needle) in QUESTIONS.items():
        reply = await retrieval.Search(
            retrieval_pb2.SearchRequest(tenant=tenant, query=question, top_k=3), timeout=30
        )
        assert reply.hits, name
        assert (reply.hits[0].doc_id, needle in reply.hits[0].text) == (name, True), question
    table = await retrieval.Search(
        retrieval_pb2.SearchRequest(tenant=tenant, query="Kenya washed coffee", top_k=1),
        timeout=30,
    )
    assert table.hits[0].text.startswith("Coffee | Origin | Process | Price per kg (EUR)\n")
    # The e-mail's CSV attachment is a document of its own, linked to the e-mail.
    attachment = "grinder-repair.eml/attachments/1-repair-quote.csv"
    [(_, event)] = (await docs.wait_for([(tenant, attachment)], 60.0)).items()
    assert event.status == events_pb2.DOCUMENT_STATUS_INDEXED, event.reason
    quote = await retrieval.Search(
        retrieval_pb2.SearchRequest(tenant=tenant, query="burr set replacement cost", top_k=1),
        timeout=30,
    )
    assert quote.hits[0].doc_id == attachment
    assert quote.hits[0].metadata["parent_doc_id"] == "grinder-repair.eml"
