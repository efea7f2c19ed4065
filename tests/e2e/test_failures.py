"""Every bad input of the document path ends in the dead-letter subject with a reason,
and the platform keeps working."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.msg import Msg

from llmops.bus.topology import DOCS_INGEST
from llmops.docclient import DocumentClient
from llmops.v1 import documents_pb2, events_pb2, retrieval_pb2_grpc
from tests.conftest import MAX_DOCUMENT_BYTES
from tests.e2e.test_document_path import TIMEOUT, doc, ingest, search, tenant
from tests.support import Platform

FAILED = events_pb2.DOCUMENT_STATUS_FAILED


class DeadLetters:
    def __init__(self) -> None:
        self.letters: list[events_pb2.DeadLetter] = []

    async def on_msg(self, msg: Msg) -> None:
        letter = events_pb2.DeadLetter()
        letter.ParseFromString(msg.data)
        self.letters.append(letter)

    async def with_payload(self, payload: bytes) -> events_pb2.DeadLetter:
        for _ in range(int(TIMEOUT * 10)):
            for letter in self.letters:
                if letter.payload == payload:
                    return letter
            await asyncio.sleep(0.1)
        raise TimeoutError("no dead letter for the payload")


@pytest.fixture
async def dead_letters(platform: Platform) -> AsyncIterator[DeadLetters]:
    nc = await nats.connect(platform.nats_url)
    collected = DeadLetters()
    await nc.subscribe("llmops.dlq.>", cb=collected.on_msg)
    await nc.flush()
    yield collected
    await nc.close()


@pytest.mark.parametrize(
    ("payload", "headers", "reason"),
    [
        (b"\xff\xfe not protobuf at all", None, "not a valid llmops.v1.Document"),
        (b'{"tenant": "x", "docId": ', {"Content-Type": "application/json"}, "not a valid"),
        (b"<xml/>", {"Content-Type": "application/xml"}, "unsupported Content-Type"),
    ],
)
async def test_malformed_messages_are_dead_lettered(
    docs: DocumentClient,
    dead_letters: DeadLetters,
    payload: bytes,
    headers: dict[str, str] | None,
    reason: str,
) -> None:
    await docs.js.publish(DOCS_INGEST, payload, headers=headers)
    letter = await dead_letters.with_payload(payload)
    assert letter.stage == "ingestion"
    assert reason in letter.reason
    assert letter.subject == DOCS_INGEST
    assert letter.deliveries == 1  # poison: not retried


async def test_json_documents_are_accepted(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    t = tenant()
    payload = (
        f'{{"tenant": "{t}", "docId": "json-doc", "format": "DOCUMENT_FORMAT_TEXT", '
        '"content": "VGhlIHdpZmkgcGFzc3dvcmQgaXMgb24gdGhlIGZyaWRnZS4="}'
    ).encode()  # content is base64 (proto3 JSON for bytes): "The wifi password is on the fridge."
    await docs.js.publish(DOCS_INGEST, payload, headers={"Content-Type": "application/json"})
    outcome = await docs.wait_for([(t, "json-doc")], TIMEOUT)
    assert outcome[(t, "json-doc")].status == events_pb2.DOCUMENT_STATUS_INDEXED
    hits = await search(retrieval, t, "where is the wifi password")
    assert hits[0].text == "The wifi password is on the fridge."


@pytest.mark.parametrize(
    ("content", "source", "content_type", "reason"),
    [
        (b"MZ\x90\x00\x03 binary program", "setup.exe", "application/x-msdownload", "format"),
        (b"   \n\t  ", "blank.txt", "text/plain", "empty"),
        (b"%PDF-1.7\n this is not really a pdf", "broken.pdf", "application/pdf", "PDF"),
        (b"x" * (MAX_DOCUMENT_BYTES + 1), "huge.txt", "text/plain", str(MAX_DOCUMENT_BYTES)),
    ],
)
async def test_bad_documents_fail_with_a_reason_and_a_dead_letter(
    docs: DocumentClient,
    dead_letters: DeadLetters,
    retrieval: retrieval_pb2_grpc.RetrievalStub,
    content: bytes,
    source: str,
    content_type: str,
    reason: str,
) -> None:
    t = tenant()
    bad = doc(t, f"bad-{uuid.uuid4().hex[:6]}", content, source)
    bad.content_type = content_type
    good = doc(t, "good", b"Lunch is served at noon in the atrium.", "good.txt")
    statuses = await ingest(docs, bad, good)
    assert statuses == {bad.doc_id: FAILED, "good": events_pb2.DOCUMENT_STATUS_INDEXED}
    letter = await dead_letters.with_payload(bad.SerializeToString())
    assert reason.lower() in letter.reason.lower()
    assert (letter.tenant, letter.doc_id) == (t, bad.doc_id)
    assert (await search(retrieval, t, "when is lunch"))[0].doc_id == "good"


async def test_document_without_id_is_refused(
    docs: DocumentClient, dead_letters: DeadLetters
) -> None:
    bad = documents_pb2.Document(tenant=tenant(), content=b"no id", source="x.txt")
    await docs.publish(bad)
    letter = await dead_letters.with_payload(bad.SerializeToString())
    assert "doc_id" in letter.reason
