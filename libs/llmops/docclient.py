"""A client for the document path over NATS: publish documents, await their outcomes.

Used by `llmops ingest --wait`, the tests and the benchmarks. Outcomes come
from the document events (`llmops.events.document.>`), so the watcher must be
subscribed before publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from llmops.bus.codec import CONTENT_TYPE, PROTOBUF
from llmops.bus.topology import DOCS_DELETE, DOCUMENT_EVENTS
from llmops.settings import nats_servers
from llmops.uploads import publish_document
from llmops.v1 import documents_pb2, events_pb2

Key = tuple[str, str]  # (tenant, doc_id)
FINAL = {
    events_pb2.DOCUMENT_STATUS_INDEXED,
    events_pb2.DOCUMENT_STATUS_UNCHANGED,
    events_pb2.DOCUMENT_STATUS_DELETED,
    events_pb2.DOCUMENT_STATUS_FAILED,
    events_pb2.DOCUMENT_STATUS_SUPERSEDED,
}


class DocumentClient:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        # Final outcomes not yet claimed by a wait_for, oldest first per document.
        self._outcomes: dict[Key, list[events_pb2.DocumentEvent]] = {}
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None

    @classmethod
    async def connect(cls, url: str) -> DocumentClient:
        return cls(
            await nats.connect(nats_servers(url), max_reconnect_attempts=-1, connect_timeout=5)
        )

    async def close(self) -> None:
        await self.nc.drain()

    async def watch(self) -> None:
        """Start receiving outcome events (call before publishing)."""

        async def on_event(msg: Msg) -> None:
            event = events_pb2.DocumentEvent()
            event.ParseFromString(msg.data)
            if event.status in FINAL:
                self._outcomes.setdefault((event.tenant, event.doc_id), []).append(event)
                self._arrived.set()

        self._sub = await self.nc.subscribe(f"{DOCUMENT_EVENTS}.>", cb=on_event)
        await self.nc.flush()

    async def publish(
        self,
        doc: documents_pb2.Document,
        file: Path | None = None,
        *,
        keep: bool = False,
        msg_id: str = "",
    ) -> None:
        """Publish durably: returns once JetStream stored the document (and its upload, when
        it is too large for a message). `file` supplies the content, read in blocks; `keep`
        leaves the upload in the object store after ingestion; `msg_id` (`Nats-Msg-Id`) lets
        a publisher retry after a failed publish without the document arriving twice."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        await publish_document(self.js, doc, file, keep=keep, headers=headers)

    async def delete(self, tenant: str, doc_id: str) -> None:
        message = documents_pb2.DeleteDocument(tenant=tenant, doc_id=doc_id)
        await self.js.publish(
            DOCS_DELETE, message.SerializeToString(), headers={CONTENT_TYPE: PROTOBUF}
        )

    async def wait_for(
        self,
        keys: Iterable[Key],
        timeout_s: float,
        on_outcome: Callable[[events_pb2.DocumentEvent], None] | None = None,
    ) -> dict[Key, events_pb2.DocumentEvent]:
        """Claim the next final event of each (tenant, doc_id); TimeoutError names those missing.

        Outcomes of documents nobody waits for yet are kept, so waiting for one
        document first and the rest later loses nothing.
        """
        waiting = set(keys)
        outcomes: dict[Key, events_pb2.DocumentEvent] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for key in [k for k in waiting if self._outcomes.get(k)]:
                event = self._outcomes[key].pop(0)
                waiting.discard(key)
                outcomes[key] = event
                if on_outcome:
                    on_outcome(event)
            if not waiting:
                return outcomes
            remaining = deadline - loop.time()
            if remaining <= 0:
                missing = ", ".join(f"{t}/{d}" for t, d in sorted(waiting)[:10])
                raise TimeoutError(f"{len(waiting)} documents without an outcome: {missing}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


def document_for_file(
    path: Path, doc_id: str, tenant: str, collection: str, metadata: dict[str, str]
) -> documents_pb2.Document:
    """The Document for `path`, without its content (`publish(doc, file=path)` adds it)."""
    content_type = mimetypes.guess_type(path.name)[0] or ""
    if path.suffix.lower() in (".md", ".markdown"):
        content_type = "text/markdown"
    return documents_pb2.Document(
        tenant=tenant,
        doc_id=doc_id,
        collection=collection,
        source=str(path),
        title=path.stem,
        content_type=content_type,
        metadata=metadata,
    )


def document_from_file(
    path: Path, doc_id: str, tenant: str, collection: str, metadata: dict[str, str]
) -> documents_pb2.Document:
    """The Document for a small file, its content read."""
    doc = document_for_file(path, doc_id, tenant, collection, metadata)
    doc.content = path.read_bytes()
    return doc
