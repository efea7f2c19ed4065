"""The document catalog on a real nats-server: the catalog stage consumes real document
events from the EVENTS stream, and ListDocuments / GetDocument answer over real gRPC."""

from __future__ import annotations

import asyncio
import base64
import random
import uuid
from collections.abc import AsyncIterator

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from ingestion.catalog import DocumentCatalog
from llmops.bus.events import document_event
from llmops.bus.topology import DOCUMENT_EVENTS, dlq_subject
from llmops.ids import UNKNOWN_TENANT
from llmops.v1 import events_pb2, ingestion_pb2
from tests.ingestion.catalog_rig import CatalogRig, catalog_rig

INDEXED = events_pb2.DOCUMENT_STATUS_INDEXED
DELETED = events_pb2.DOCUMENT_STATUS_DELETED
FAILED = events_pb2.DOCUMENT_STATUS_FAILED
UNCHANGED = events_pb2.DOCUMENT_STATUS_UNCHANGED
SUPERSEDED = events_pb2.DOCUMENT_STATUS_SUPERSEDED


@pytest.fixture(scope="module")
async def rig(js: JetStreamContext) -> AsyncIterator[CatalogRig]:
    async with catalog_rig(js) as r:
        yield r


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _get(rig: CatalogRig, tenant: str, doc_id: str) -> ingestion_pb2.DocumentInfo:
    return await rig.stub.GetDocument(
        ingestion_pb2.GetDocumentRequest(tenant=tenant, doc_id=doc_id)
    )


async def _list(
    rig: CatalogRig, tenant: str, **fields: object
) -> ingestion_pb2.ListDocumentsResponse:
    return await rig.stub.ListDocuments(ingestion_pb2.ListDocumentsRequest(tenant=tenant, **fields))


async def test_indexed_then_unchanged_then_deleted(rig: CatalogRig) -> None:
    tenant = _tenant()
    await rig.publish(
        INDEXED, tenant, "docs/a.md", 1, collection="handbook", source="a.md", chunks=3, tokens=700
    )
    await rig.settled()
    info = await _get(rig, tenant, "docs/a.md")
    assert (info.tenant, info.doc_id, info.collection, info.source) == (
        tenant,
        "docs/a.md",
        "handbook",
        "a.md",
    )
    assert (info.status, info.version, info.versions, info.chunks, info.tokens) == (
        INDEXED,
        1,
        1,
        3,
        700,
    )
    assert info.stage == "retrieval" and info.updated.seconds > 0

    # Re-published with the same content: ingestion says unchanged, with the raw size.
    await rig.publish(UNCHANGED, tenant, "docs/a.md", stage="ingestion", content_bytes=1234)
    await rig.settled()
    info = await _get(rig, tenant, "docs/a.md")
    assert (info.status, info.version, info.chunks, info.content_bytes, info.stage) == (
        UNCHANGED,
        1,
        3,
        1234,
        "ingestion",
    )

    # The tombstone names no collection: the record keeps it; nothing is indexed any more.
    await rig.publish(DELETED, tenant, "docs/a.md", 2)
    await rig.settled()
    info = await _get(rig, tenant, "docs/a.md")
    assert (info.status, info.version, info.versions, info.chunks, info.collection) == (
        DELETED,
        2,
        2,
        0,
        "handbook",
    )
    assert (await _list(rig, tenant)).documents == []
    listed = await _list(rig, tenant, include_deleted=True)
    assert [(d.doc_id, d.status) for d in listed.documents] == [("docs/a.md", DELETED)]

    # Ingested again after the delete: the next version, listed again.
    await rig.publish(INDEXED, tenant, "docs/a.md", 3, collection="handbook", chunks=2)
    await rig.settled()
    assert [(d.version, d.status) for d in (await _list(rig, tenant)).documents] == [(3, INDEXED)]


async def test_a_failure_is_kept_as_last_error_after_a_later_success(rig: CatalogRig) -> None:
    tenant = _tenant()
    await rig.publish(INDEXED, tenant, "report.pdf", 1, collection="c", chunks=4)
    await rig.publish(
        FAILED, tenant, "report.pdf", stage="embedding", reason="model crashed", content_bytes=9
    )
    await rig.settled()
    info = await _get(rig, tenant, "report.pdf")
    assert (info.status, info.last_error, info.stage, info.version) == (
        FAILED,
        "model crashed",
        "embedding",
        1,
    )
    # An embedding dead letter's size is its bus message's, not the document's: not taken.
    assert info.content_bytes == 0

    await rig.publish(INDEXED, tenant, "report.pdf", 2, collection="c", chunks=5)
    await rig.settled()
    info = await _get(rig, tenant, "report.pdf")
    assert (info.status, info.version, info.chunks, info.last_error) == (
        INDEXED,
        2,
        5,
        "model crashed",
    )


async def test_an_older_version_never_moves_the_record_back(rig: CatalogRig) -> None:
    tenant = _tenant()
    await rig.publish(INDEXED, tenant, "d", 3, collection="c", chunks=7)
    await rig.publish(SUPERSEDED, tenant, "d", 2, collection="c", chunks=1)  # late, older
    await rig.publish(INDEXED, tenant, "d", 1, collection="old", chunks=9)  # a redelivery
    await rig.settled()
    info = await _get(rig, tenant, "d")
    assert (info.status, info.version, info.chunks, info.collection, info.versions) == (
        INDEXED,
        3,
        7,
        "c",
        1,
    )
    # A failure published before the indexed outcome but consumed after it keeps its
    # reason, and does not change the status it no longer describes.
    stale = document_event("ingestion", FAILED, tenant=tenant, doc_id="d", reason="late")
    stale.time.FromNanoseconds(info.updated.ToNanoseconds() - 1_000_000_000)
    await rig.js.publish(f"{DOCUMENT_EVENTS}.failed", stale.SerializeToString())
    await rig.settled()
    info = await _get(rig, tenant, "d")
    assert (info.status, info.version, info.last_error) == (INDEXED, 3, "late")


async def test_concurrent_writers_converge_on_the_newest_version(js: JetStreamContext) -> None:
    """Replicas racing on one document: compare-and-set, so the newest version wins."""
    tenant = _tenant()
    replicas = [await DocumentCatalog.open(js) for _ in range(3)]
    versions = list(range(1, 31))
    random.Random(7).shuffle(versions)
    events = [
        document_event(
            "retrieval",
            INDEXED,
            tenant=tenant,
            doc_id="raced",
            chunks=v,
        )
        for v in versions
    ]
    for event, v in zip(events, versions, strict=True):
        event.version = v
    await asyncio.gather(*(replicas[i % 3].record(e) for i, e in enumerate(events)))
    record = await replicas[0].get(tenant, "raced")
    assert record is not None
    assert (record.version, record.chunks, record.status) == (30, 30, "indexed")


async def test_tenants_never_see_each_other(rig: CatalogRig) -> None:
    a = _tenant()
    b = a + "b"  # `a.*` must not match `ab.*`, nor the other way round
    await rig.publish(INDEXED, a, "secret.txt", 1, collection="c", chunks=1)
    await rig.publish(INDEXED, b, "own.txt", 1, collection="c", chunks=1)
    await rig.settled()
    assert [d.doc_id for d in (await _list(rig, a)).documents] == ["secret.txt"]
    assert [d.doc_id for d in (await _list(rig, b, include_deleted=True)).documents] == ["own.txt"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _get(rig, b, "secret.txt")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'secret.txt'" in caught.value.details() and repr(b) in caught.value.details()


async def test_an_unknown_tenant_failure_is_kept_where_no_request_reaches(
    rig: CatalogRig,
) -> None:
    doc_id = f"bad-{uuid.uuid4().hex[:6]}"
    await rig.publish(FAILED, "Not.A.Tenant", doc_id, stage="ingestion", reason="invalid tenant")
    await rig.settled()
    record = await rig.catalog.get(UNKNOWN_TENANT, doc_id)
    assert record is not None and (record.status, record.last_error) == ("failed", "invalid tenant")
    for tenant in (UNKNOWN_TENANT, "Not.A.Tenant"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list(rig, tenant)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid tenant" in caught.value.details()


async def test_an_empty_tenant_is_default(rig: CatalogRig) -> None:
    doc_id = f"default-{uuid.uuid4().hex[:6]}"
    await rig.publish(INDEXED, "default", doc_id, 1, collection="default")
    await rig.settled()
    assert (await _get(rig, "", doc_id)).tenant == "default"


async def test_pages_of_one_collection_in_doc_id_order(rig: CatalogRig) -> None:
    tenant = _tenant()
    names = [f"doc-{i:02d}" for i in range(25)]
    collections = {name: "c1" if i % 5 else "c2" for i, name in enumerate(names)}
    for name in random.Random(3).sample(names, len(names)):  # published in no order
        await rig.publish(INDEXED, tenant, name, 1, collection=collections[name], chunks=1)
    await rig.publish(DELETED, tenant, "doc-07", 2)  # hidden unless asked for
    await rig.settled()
    expected = sorted(
        d.doc_id
        for d in (await _list(rig, tenant, page_size=1000)).documents
        if d.collection == "c1"
    )
    assert len(expected) == 19  # 20 in c1, one of them deleted
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await _list(rig, tenant, collection="c1", page_size=4, page_token=token)
        assert len(page.documents) <= 4 and {d.collection for d in page.documents} == {"c1"}
        seen += [d.doc_id for d in page.documents]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == expected and pages == 5  # 4+4+4+4+3, the last one without a token
    everything = await _list(rig, tenant, include_deleted=True, page_size=1000)
    assert len(everything.documents) == 25 and everything.next_page_token == ""


@pytest.mark.parametrize(
    "token",
    ["not a token!", base64.urlsafe_b64encode(b"[1, 2]").decode(), "eyJ4IjogMX0"],
)
async def test_a_bad_page_token_is_invalid_argument(rig: CatalogRig, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(rig, _tenant(), page_token=token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid page_token" in caught.value.details()


async def test_bad_arguments_are_invalid_argument(rig: CatalogRig) -> None:
    cases = [
        (rig.stub.ListDocuments(ingestion_pb2.ListDocumentsRequest(page_size=-1)), "page_size"),
        (
            rig.stub.ListDocuments(ingestion_pb2.ListDocumentsRequest(collection="A/B")),
            "invalid collection",
        ),
        (rig.stub.GetDocument(ingestion_pb2.GetDocumentRequest(doc_id="")), "invalid doc_id"),
    ]
    for call, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in caught.value.details()


async def test_a_malformed_event_is_dead_lettered_and_the_rest_recorded(
    rig: CatalogRig, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    letters: list[events_pb2.DeadLetter] = []

    async def on_letter(msg: nats.aio.msg.Msg) -> None:
        letter = events_pb2.DeadLetter()
        letter.ParseFromString(msg.data)
        letters.append(letter)

    await nc.subscribe(dlq_subject("catalog"), cb=on_letter)
    await nc.flush()
    tenant = _tenant()
    await rig.js.publish(f"{DOCUMENT_EVENTS}.indexed", b"\xff\xfenot protobuf")
    no_status = events_pb2.DocumentEvent(tenant=tenant, doc_id="x", version=1)
    await rig.js.publish(f"{DOCUMENT_EVENTS}.unspecified", no_status.SerializeToString())
    await rig.publish(INDEXED, tenant, "fine", 1, collection="c")
    await rig.settled()
    await nc.flush()
    await nc.close()
    assert sorted(letter.reason.split(":")[0] for letter in letters) == [
        "document event without a status",
        "not a DocumentEvent",
    ]
    assert [d.doc_id for d in (await _list(rig, tenant)).documents] == ["fine"]
