"""Documents larger than a bus message, and hostile ones, on a real nats-server with
ingestion, embedding and retrieval as processes.

A 20 MB PDF (over the bus's 16 MB) goes through the object store on its own, is
searchable, and its upload is removed (or kept when asked); a reference that names
other bytes, or more than the limit, is dead-lettered with the reason and its
object kept for a replay; ingestion killed -9 mid-way through a large file resumes
it with nothing doubled; a file that takes too long or too much memory to parse is
dead-lettered "gave up after N s" / "over N MB" without stalling the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import signal
import uuid
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from llmops import uploads
from llmops.bus.topology import DLQ, DOCS_CHUNKED, UPLOADS_BUCKET
from llmops.docclient import DocumentClient, document_for_file
from llmops.v1 import (
    documents_pb2,
    events_pb2,
    ingestion_pb2,
    ingestion_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.largepdf import write_large_pdf
from tests.support import ServiceProcess

SAMPLES = Path(__file__).parents[1] / "data" / "formats"
LIMIT = 64 * 1024 * 1024
PARSE_TIMEOUT_S = 8
PARSE_MEMORY_MB = 400
INDEXED = events_pb2.DOCUMENT_STATUS_INDEXED
T = TypeVar("T")


@dataclass
class Rig:
    nc: Client
    docs: DocumentClient
    ingestion: ServiceProcess
    retrieval: retrieval_pb2_grpc.RetrievalStub
    grpc_ingest: ingestion_pb2_grpc.IngestionStub
    spool: Path
    letters: list[events_pb2.DeadLetter]
    chunked: list[documents_pb2.ChunkedDocument]

    async def letter(self, doc_id: str, timeout_s: float = 60) -> events_pb2.DeadLetter:
        return await _first(lambda: [x for x in self.letters if x.doc_id == doc_id], timeout_s)

    async def object_exists(self, ref: documents_pb2.ContentRef) -> bool:
        store = await self.nc.jetstream().object_store(UPLOADS_BUCKET)
        try:
            await store.get_info(ref.name)
        except NotFoundError:
            return False
        return True


async def _first(found: Callable[[], list[T]], timeout_s: float) -> T:
    for _ in range(int(timeout_s * 20)):
        if hits := found():
            return hits[0]
        await asyncio.sleep(0.05)
    raise TimeoutError("nothing arrived")


@pytest.fixture(scope="module")
async def rig(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    data = tmp_path_factory.mktemp("large")
    spool = data / "spool"
    env = {
        "LLMOPS_MAX_DOCUMENT_BYTES": str(LIMIT),
        "LLMOPS_PARSE_TIMEOUT_S": str(PARSE_TIMEOUT_S),
        "LLMOPS_PARSE_MEMORY_MB": str(PARSE_MEMORY_MB),
        "LLMOPS_SPOOL_DIR": str(spool),
        "LLMOPS_MAX_DELIVER": "2",
        # A message the killed process held comes back after this (in-progress acks keep
        # a long parse from being redelivered meanwhile).
        "LLMOPS_ACK_WAIT_S": "5",
    }
    embedding = ServiceProcess("embedding", nats_url, data / "embedding", **env)
    services = [
        ServiceProcess("ingestion", nats_url, data / "ingestion", **env),
        embedding,
        ServiceProcess(
            "retrieval", nats_url, data / "retrieval", LLMOPS_EMBEDDING_ADDR=embedding.addr, **env
        ),
    ]
    for service in services:
        service.start()
    nc = await nats.connect(nats_url)
    letters: list[events_pb2.DeadLetter] = []
    chunked: list[documents_pb2.ChunkedDocument] = []

    async def on_letter(msg: Msg) -> None:
        letters.append(events_pb2.DeadLetter.FromString(msg.data))

    async def on_chunked(msg: Msg) -> None:
        chunked.append(documents_pb2.ChunkedDocument.FromString(msg.data))

    await nc.subscribe(f"{DLQ}.>", cb=on_letter)
    await nc.subscribe(DOCS_CHUNKED, cb=on_chunked)
    docs = DocumentClient(nc)
    await docs.watch()
    try:
        for service in services:
            await service.wait_healthy(timeout_s=120)
        ingestion, _, retrieval = services
        yield Rig(
            nc,
            docs,
            ingestion,
            retrieval_pb2_grpc.RetrievalStub(retrieval.channel),
            ingestion_pb2_grpc.IngestionStub(ingestion.channel),
            spool,
            letters,
            chunked,
        )
    finally:
        await nc.close()
        for service in services:
            await service.close()
            service.stop()


def _tenant() -> str:
    return f"big-{uuid.uuid4().hex[:8]}"


async def _search(rig: Rig, tenant: str, query: str) -> retrieval_pb2.SearchResponse:
    """BM25 alone: a page's marker is one rare token, which dense vectors do not tell apart."""
    request = retrieval_pb2.SearchRequest(
        tenant=tenant, query=query, top_k=1, mode=retrieval_pb2.SEARCH_MODE_SPARSE
    )
    return await rig.retrieval.Search(request, timeout=30)


async def test_a_file_over_the_bus_limit_goes_by_upload_and_is_searchable(
    rig: Rig, tmp_path: Path
) -> None:
    tenant = _tenant()
    path = tmp_path / "inspection.pdf"
    size = write_large_pdf(path, pages=10, image_bytes_per_page=2 * 1024 * 1024)
    assert size > 16 * 1024 * 1024  # more than one bus message can carry
    doc = document_for_file(path, "inspection.pdf", tenant, "reports", {})
    await rig.docs.publish(doc, file=path)
    assert doc.HasField("content_ref") and not doc.content
    assert doc.content_ref.size == size
    assert doc.content_ref.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    [event] = (await rig.docs.wait_for([(tenant, "inspection.pdf")], 120)).values()
    assert event.status == INDEXED, event.reason
    hit = (await _search(rig, tenant, "marker zq00007x")).hits[0]
    assert (hit.doc_id, hit.heading) == ("inspection.pdf", "Page 7")
    assert not await rig.object_exists(doc.content_ref)  # removed once ingested
    assert not list((rig.spool).rglob("upload-*"))  # and its spool file
    # The catalog knows it with its raw size, carried from ingestion to the indexed event.
    info = await _catalogued(rig, tenant)
    assert (info.status, info.version, info.chunks, info.content_bytes) == (INDEXED, 1, 10, size)


async def _catalogued(rig: Rig, tenant: str) -> ingestion_pb2.DocumentInfo:
    request = ingestion_pb2.GetDocumentRequest(tenant=tenant, doc_id="inspection.pdf")
    for _ in range(100):
        with contextlib.suppress(grpc.aio.AioRpcError):
            info = await rig.grpc_ingest.GetDocument(request, timeout=10)
            if info.status == INDEXED:
                return info
        await asyncio.sleep(0.1)
    raise TimeoutError("the catalog never showed the document indexed")


async def test_keep_leaves_the_upload_and_grpc_ingest_uploads_on_its_own(
    rig: Rig, tmp_path: Path
) -> None:
    tenant = _tenant()
    path = tmp_path / "kept.pdf"
    write_large_pdf(path, pages=3, image_bytes_per_page=3 * 1024 * 1024, seed=11)
    kept = document_for_file(path, "kept.pdf", tenant, "default", {})
    await rig.docs.publish(kept, file=path, keep=True)
    # gRPC Ingest takes the whole document and moves it to the object store itself.
    content = path.read_bytes().replace(b"zq00002x", b"zq99992x")
    sent = documents_pb2.Document(tenant=tenant, doc_id="by-grpc.pdf", content=content)
    reply = await rig.grpc_ingest.Ingest(ingestion_pb2.IngestRequest(documents=[sent]), timeout=60)
    assert list(reply.doc_ids) == ["by-grpc.pdf"]
    outcomes = await rig.docs.wait_for([(tenant, "kept.pdf"), (tenant, "by-grpc.pdf")], 120)
    assert [e.status for e in outcomes.values()] == [INDEXED, INDEXED]
    assert await rig.object_exists(kept.content_ref)
    hit = (await _search(rig, tenant, "marker zq99992x")).hits[0]
    assert hit.doc_id == "by-grpc.pdf"
    digest = hashlib.sha256(content).hexdigest()
    assert not await rig.object_exists(documents_pb2.ContentRef(name=f"{tenant}/{digest}"))


async def test_a_reference_to_other_bytes_or_over_the_limit_is_refused_and_kept(
    rig: Rig, tmp_path: Path
) -> None:
    tenant = _tenant()
    js = rig.nc.jetstream()
    ref = await uploads.upload(js, tenant, io.BytesIO(b"%PDF-1.7 not what the ref says"))
    wrong = documents_pb2.ContentRef(name=ref.name, sha256="00" * 32, size=ref.size)
    huge = documents_pb2.ContentRef(name=ref.name, sha256=ref.sha256, size=LIMIT + 1)
    for doc_id, content_ref in (("wrong.pdf", wrong), ("huge.pdf", huge)):
        doc = documents_pb2.Document(tenant=tenant, doc_id=doc_id, content_ref=content_ref)
        await uploads.publish_document(js, doc)
    assert "the reference says" in (await rig.letter("wrong.pdf")).reason
    too_large = (await rig.letter("huge.pdf")).reason
    assert too_large.startswith("document_too_large:") and str(LIMIT) in too_large
    assert await rig.object_exists(ref)  # the dead letters still name it: a replay needs it
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rig.grpc_ingest.Ingest(
            ingestion_pb2.IngestRequest(
                documents=[documents_pb2.Document(tenant=tenant, doc_id="x", content_ref=huge)]
            ),
            timeout=10,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_kill_9_mid_way_through_a_large_file_resumes_without_doubles(
    rig: Rig, tmp_path: Path
) -> None:
    tenant = _tenant()
    path = tmp_path / "long.pdf"
    write_large_pdf(path, pages=600, image_bytes_per_page=40_000, seed=3)
    doc = document_for_file(path, "long.pdf", tenant, "default", {})
    await rig.docs.publish(doc, file=path)
    killed = rig.ingestion.pid
    await _first(lambda: list(rig.spool.glob(f"llmops-spool-{killed}/upload-*")), 60)
    rig.ingestion.stop(signal.SIGKILL)  # mid-download or mid-parse
    assert await rig.object_exists(doc.content_ref)
    rig.ingestion.start()
    await rig.ingestion.wait_healthy(timeout_s=120)
    [event] = (await rig.docs.wait_for([(tenant, "long.pdf")], 180)).values()
    assert event.status == INDEXED, event.reason
    hit = (await _search(rig, tenant, "marker zq00555x")).hits[0]
    assert (hit.doc_id, hit.heading) == ("long.pdf", "Page 555")
    versions = [c.version for c in rig.chunked if (c.tenant, c.doc_id) == (tenant, "long.pdf")]
    assert set(versions) == {1}, versions  # one version, whatever was redelivered
    assert not await rig.object_exists(doc.content_ref)
    assert not (rig.spool / f"llmops-spool-{killed}").exists()  # the dead process's spool


def _nested_html(depth: int) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"


def _docx_bomb(megabytes: int) -> bytes:
    """A real DOCX whose document.xml inflates to `megabytes` (the zip is ~1 MB)."""
    out = io.BytesIO()
    paragraph = b"<w:p><w:r><w:t>a</w:t></w:r></w:p>" * 30_000
    with (
        zipfile.ZipFile(SAMPLES / "boiler-manual.docx") as sample,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bomb,
    ):
        for item in sample.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, sample.read(item.filename))
                continue
            head, tail = sample.read(item.filename).split(b"<w:body>", 1)
            with bomb.open(item.filename, "w") as part:
                part.write(head + b"<w:body>")
                for _ in range(megabytes * 1024 * 1024 // len(paragraph)):
                    part.write(paragraph)
                part.write(b"</w:body>" + tail.split(b"</w:body>", 1)[1])
    return out.getvalue()


async def test_hostile_files_are_dead_lettered_and_never_stall_the_next(rig: Rig) -> None:
    tenant = _tenant()
    js = rig.nc.jetstream()
    hostile = {
        "deep.html": (_nested_html(150_000), "text/html"),
        "bomb.docx": (
            _docx_bomb(PARSE_MEMORY_MB),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
    }
    for doc_id, (content, content_type) in hostile.items():
        doc = documents_pb2.Document(
            tenant=tenant, doc_id=doc_id, content=content, content_type=content_type
        )
        await uploads.publish_document(js, doc)
    good = documents_pb2.Document(
        tenant=tenant,
        doc_id="fine.txt",
        content=b"The boiler room key hangs by the door.",
        content_type="text/plain",
    )
    await uploads.publish_document(js, good)
    outcomes = await rig.docs.wait_for([(tenant, d) for d in (*hostile, "fine.txt")], 120)
    statuses = {doc_id: e.status for (_, doc_id), e in outcomes.items()}
    assert statuses == {
        "deep.html": events_pb2.DOCUMENT_STATUS_FAILED,
        "bomb.docx": events_pb2.DOCUMENT_STATUS_FAILED,
        "fine.txt": INDEXED,
    }
    slow = (await rig.letter("deep.html")).reason
    assert slow.startswith(f"parse_timeout: gave up after {PARSE_TIMEOUT_S} s"), slow
    big = (await rig.letter("bomb.docx")).reason
    assert big.startswith("parse_over_memory:") and f"over {PARSE_MEMORY_MB} MB" in big, big
    # The worker killed for the deadline was replaced: the next document parsed at once.
    assert (await _search(rig, tenant, "boiler room key")).hits[0].doc_id == ("fine.txt")
