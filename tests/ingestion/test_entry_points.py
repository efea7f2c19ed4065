"""The id grammar at ingestion's doors, on a real nats-server with ingestion (and analytics)
as processes: a bad tenant, doc id or collection is dead-lettered from the bus with the
reason and refused over gRPC with INVALID_ARGUMENT; a payload that is no Document at all
still leaves a failed event, stored under UNKNOWN_TENANT where only all-tenants keys see it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from llmops.apikeys import KeyAdmin
from llmops.bus.topology import DLQ, DOCS_DELETE, DOCS_INGEST, DOCUMENT_EVENTS
from llmops.ids import UNKNOWN_TENANT
from llmops.v1 import documents_pb2, events_pb2, ingestion_pb2, ingestion_pb2_grpc
from tests.analytics.service import FAST, AnalyticsProcess
from tests.support import ServiceProcess

T = TypeVar("T")
TIMEOUT_S = 20
FAILED = events_pb2.DOCUMENT_STATUS_FAILED
BAD_TENANT = "invalid tenant '../../etc': 1-63 of a-z 0-9 _ -"
LONG_COLLECTION = "c" * 64


class Outcomes:
    """Every ingestion dead letter and document event, as they arrive."""

    def __init__(self) -> None:
        self.letters: list[events_pb2.DeadLetter] = []
        self.events: list[events_pb2.DocumentEvent] = []

    async def on_letter(self, msg: Msg) -> None:
        self.letters.append(events_pb2.DeadLetter.FromString(msg.data))

    async def on_event(self, msg: Msg) -> None:
        self.events.append(events_pb2.DocumentEvent.FromString(msg.data))

    async def letter(self, payload: bytes) -> events_pb2.DeadLetter:
        return await _first(lambda: [x for x in self.letters if x.payload == payload])

    async def failure(
        self, matches: Callable[[events_pb2.DocumentEvent], bool]
    ) -> events_pb2.DocumentEvent:
        return await _first(lambda: [e for e in self.events if e.status == FAILED and matches(e)])


async def _first(found: Callable[[], list[T]]) -> T:
    for _ in range(TIMEOUT_S * 20):
        if hits := found():
            return hits[0]
        await asyncio.sleep(0.05)
    raise TimeoutError("nothing arrived")


@pytest.fixture(scope="module")
async def analytics(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AnalyticsProcess]:
    service = AnalyticsProcess(nats_url, tmp_path_factory.mktemp("analytics"), **FAST)
    service.start()
    await service.wait_healthy()
    yield service
    service.stop()
    await service.close()


@pytest.fixture(scope="module")
async def outcomes(nats_url: str, ingestion: ServiceProcess) -> AsyncIterator[Outcomes]:
    nc = await nats.connect(nats_url)
    seen = Outcomes()
    await nc.subscribe(f"{DLQ}.ingestion", cb=seen.on_letter)
    await nc.subscribe(f"{DOCUMENT_EVENTS}.>", cb=seen.on_event)
    await nc.flush()
    yield seen
    await nc.close()


@pytest.fixture
def stub(ingestion: ServiceProcess) -> ingestion_pb2_grpc.IngestionStub:
    return ingestion_pb2_grpc.IngestionStub(ingestion.channel)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _doc(tenant: str, doc_id: str, collection: str = "") -> documents_pb2.Document:
    return documents_pb2.Document(
        tenant=tenant,
        doc_id=doc_id,
        collection=collection,
        format=documents_pb2.DOCUMENT_FORMAT_TEXT,
        content=b"Lunch is at noon.",
    )


# (the bad fields of a Document, words of the reason)
BAD_DOCUMENTS = [
    ({"tenant": "../../etc"}, BAD_TENANT),
    ({"doc_id": "a\x07b.md"}, "invalid doc_id 'a\\x07b.md': it holds a control or format"),
    ({"doc_id": "docs/../../etc/passwd"}, "it holds a '..' segment"),
    ({"collection": LONG_COLLECTION}, f"invalid collection '{LONG_COLLECTION}'"),
]


def _bad_doc(fields: dict[str, str]) -> documents_pb2.Document:
    """A document of its own tenant and doc id, but for the bad `fields`."""
    return _doc(**{"tenant": _tenant(), "doc_id": f"{uuid.uuid4().hex}.md", **fields})


@pytest.mark.parametrize(("fields", "reason"), BAD_DOCUMENTS)
async def test_a_bad_id_on_the_bus_is_dead_lettered_with_the_reason(
    js: JetStreamContext, outcomes: Outcomes, fields: dict[str, str], reason: str
) -> None:
    doc = _bad_doc(fields)
    payload = doc.SerializeToString()
    await js.publish(DOCS_INGEST, payload)
    letter = await outcomes.letter(payload)
    assert letter.stage == "ingestion"
    assert reason in letter.reason and letter.reason.startswith("invalid_document: ")
    # Only the ids that pass are named; a refused tenant is recorded as the unknown one.
    tenant = "" if "tenant" in fields else doc.tenant
    doc_id = "" if "doc_id" in fields else doc.doc_id
    assert (letter.tenant, letter.doc_id) == (tenant, doc_id)
    event = await outcomes.failure(
        lambda e: e.reason == letter.reason and e.doc_id == doc_id and e.tenant != ""
    )
    assert event.tenant == (tenant or UNKNOWN_TENANT)
    assert event.HasField("time") and event.stage == "ingestion"


async def test_a_bad_tenant_in_a_delete_on_the_bus_is_dead_lettered(
    js: JetStreamContext, outcomes: Outcomes
) -> None:
    doc_id = f"{uuid.uuid4().hex}.md"
    payload = documents_pb2.DeleteDocument(tenant="../../etc", doc_id=doc_id).SerializeToString()
    await js.publish(DOCS_DELETE, payload)
    letter = await outcomes.letter(payload)
    assert BAD_TENANT in letter.reason
    event = await outcomes.failure(lambda e: e.doc_id == doc_id)
    assert event.tenant == UNKNOWN_TENANT and event.reason == letter.reason


@pytest.mark.parametrize(("fields", "reason"), BAD_DOCUMENTS)
async def test_a_bad_id_over_grpc_is_invalid_argument(
    stub: ingestion_pb2_grpc.IngestionStub, fields: dict[str, str], reason: str
) -> None:
    good = _doc(tenant=_tenant(), doc_id="fine.md")
    bad = _bad_doc(fields)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Ingest(ingestion_pb2.IngestRequest(documents=[good, bad]), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (refused.value.details() or "")


@pytest.mark.parametrize(
    ("tenant", "doc_id", "reason"),
    [
        ("../../etc", "a.md", BAD_TENANT),
        ("acme", "a\nb", "invalid doc_id 'a\\nb'"),
        ("../../etc", "", BAD_TENANT),  # the tenant is checked even with nothing to delete
    ],
)
async def test_a_bad_id_in_a_grpc_delete_is_invalid_argument(
    stub: ingestion_pb2_grpc.IngestionStub, tenant: str, doc_id: str, reason: str
) -> None:
    request = ingestion_pb2.DeleteRequest(tenant=tenant, doc_ids=[doc_id] if doc_id else [])
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Delete(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (refused.value.details() or "")


async def test_a_bad_tenant_gets_no_key(js: JetStreamContext) -> None:
    with pytest.raises(ValueError, match=r"invalid tenant '\.\./\.\./etc'"):
        await KeyAdmin(js).create_key("../../etc")


async def test_a_payload_that_is_no_document_is_stored_under_the_unknown_tenant(
    js: JetStreamContext, outcomes: Outcomes, analytics: AnalyticsProcess
) -> None:
    admin = KeyAdmin(js)
    analyst_key = (await admin.create_key("ops", all_tenants_analytics=True)).key
    tenant_key = (await admin.create_key(_tenant())).key
    payload = b"\xff\xfe not protobuf at all " + uuid.uuid4().hex.encode()
    await js.publish(DOCS_INGEST, payload)
    letter = await outcomes.letter(payload)
    assert "not a valid llmops.v1.Document" in letter.reason
    event = await outcomes.failure(lambda e: e.reason == letter.reason)
    assert (event.tenant, event.doc_id) == (UNKNOWN_TENANT, "")
    assert event.HasField("time") and event.time.seconds > 0
    assert event.content_bytes == len(payload)

    row = f"FROM documents WHERE event_id = '{event.event_id}'"
    await analytics.wait_for(analyst_key, f"SELECT count() {row}", 1)
    stored = await analytics.query(analyst_key, f"SELECT tenant, status, reason {row}")
    assert list(stored.rows[0]) == [UNKNOWN_TENANT, "failed", letter.reason]
    # A tenant's key never sees it, by event id or by naming the unknown tenant.
    assert await analytics.scalar(tenant_key, f"SELECT count() {row}") == 0
    where_unknown = f"FROM documents WHERE tenant = '{UNKNOWN_TENANT}'"
    assert await analytics.scalar(tenant_key, f"SELECT count() {where_unknown}") == 0
    assert await analytics.scalar(analyst_key, f"SELECT count() {where_unknown}") >= 1
