"""The document catalog: each document's latest outcome, per tenant, in NATS KV.

It answers "what is in the index" (ListDocuments, GetDocument, `llmops docs`).
It is kept from the document outcome events (`llmops.events.document.<status>`)
rather than written by the stages themselves, so it sees every stage's outcome
(ingestion: unchanged, failed; embedding: failed; retrieval: indexed, deleted,
superseded, failed) in one place, and a restart replays what it missed.

Key `<tenant>.<sha256(doc_id)[:40]>`: tenants are valid KV tokens (llmops.ids),
doc ids are arbitrary, so hashed; the tenant prefix lets one subject filter
read one tenant's records and nobody else's. Writes are compare-and-set on the
KV revision, so several ingestion replicas can consume the events at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmops.bus.codec import MalformedMessage, decode
from llmops.bus.events import status_name
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import DOCUMENT_CATALOG_BUCKET
from llmops.ids import TENANT_RE, UNKNOWN_TENANT
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import events_pb2

log = get_logger(__name__)
DEFAULT = "default"
SCAN_BATCH = 1000  # records per fetch when a page reads a tenant's records
SCAN_IDLE_S = 30.0  # a scan's fetch timeout, and how long its consumer outlives a crash
KV_OPERATION = "KV-Operation"  # the header of a delete or purge marker
CAS_ATTEMPTS = 20  # writers racing on one document; each lost race re-reads and re-applies
_INGESTION = "ingestion"  # the stage whose failure events carry the raw document's size
_STATUS = events_pb2.DocumentStatus


@dataclass(frozen=True)
class CatalogRecord:
    """The KV value: DocumentInfo's fields, with the status by name (readable with `nats kv`)."""

    tenant: str
    doc_id: str
    collection: str = ""
    source: str = ""
    version: int = 0
    content_bytes: int = 0
    chunks: int = 0
    tokens: int = 0
    status: str = ""
    last_error: str = ""
    stage: str = ""
    updated_ns: int = 0  # the deciding event's time
    versions: int = 0

    @property
    def deleted(self) -> bool:
        return self.status == status_name(_STATUS.DOCUMENT_STATUS_DELETED)

    def encode(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> CatalogRecord:
        return cls(**json.loads(value))


def catalog_key(tenant: str, doc_id: str) -> str:
    return f"{tenant}.{hashlib.sha256(doc_id.encode()).hexdigest()[:40]}"


def catalog_tenant(tenant: str) -> str:
    """Where an event's document is recorded: its tenant; "" is "default"; a tenant outside
    the grammar (only failures carry one) is UNKNOWN_TENANT, which no request can name."""
    tenant = tenant or DEFAULT
    return tenant if TENANT_RE.match(tenant) else UNKNOWN_TENANT


def _event_ns(event: events_pb2.DocumentEvent) -> int:
    return event.time.ToNanoseconds() if event.HasField("time") else time.time_ns()


def apply_event(
    record: CatalogRecord | None, event: events_pb2.DocumentEvent
) -> CatalogRecord | None:
    """The record after `event`; None when the event changes nothing.

    Versions only move forward: an event of an older version than the record's
    (a late superseded, a redelivery) is ignored. Events without a version
    (unchanged, failed) decide the status only if they are not older than the
    record's last outcome; a failure's reason is kept as `last_error` even after
    a later success, so "why did this fail last time" stays answerable.
    """
    tenant = catalog_tenant(event.tenant)
    current = record or CatalogRecord(tenant=tenant, doc_id=event.doc_id)
    at = _event_ns(event)
    failed = event.status == _STATUS.DOCUMENT_STATUS_FAILED
    if event.version and event.version < current.version:
        return None  # an older version's outcome never moves the record back
    advances = event.version > current.version
    decides = advances or at >= current.updated_ns
    sized = event.content_bytes > 0 and (not failed or event.stage == _INGESTION)
    changes: dict[str, object] = {}
    if failed:
        changes["last_error"] = event.reason
    if decides:
        changes.update(status=status_name(event.status), stage=event.stage, updated_ns=at)
        if event.version:  # a versioned outcome: indexed, deleted, superseded
            changes.update(version=event.version, chunks=event.chunks, tokens=event.tokens)
    if advances:
        changes["versions"] = current.versions + 1
    if sized:
        changes["content_bytes"] = event.content_bytes
    # A tombstone names neither collection nor source: keep what the document had.
    if event.collection:
        changes["collection"] = event.collection
    if event.source:
        changes["source"] = event.source
    updated = dataclasses.replace(current, **changes)  # type: ignore[arg-type]
    return updated if updated != record else None


@dataclass(frozen=True)
class Page:
    records: list[CatalogRecord]
    more: bool  # records after the last one match too


class DocumentCatalog:
    """The catalog bucket: compare-and-set updates, reads and pages of one tenant."""

    def __init__(self, js: JetStreamContext, kv: KeyValue) -> None:
        self._js = js
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext) -> DocumentCatalog:
        return cls(js, await js.key_value(DOCUMENT_CATALOG_BUCKET))

    async def _read(self, key: str) -> tuple[CatalogRecord | None, int]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, 0
        return CatalogRecord.decode(entry.value), entry.revision or 0

    async def get(self, tenant: str, doc_id: str) -> CatalogRecord | None:
        record, _ = await self._read(catalog_key(tenant, doc_id))
        return record

    async def record(self, event: events_pb2.DocumentEvent) -> CatalogRecord | None:
        """Apply one event; returns the stored record, or None when it changed nothing."""
        key = catalog_key(catalog_tenant(event.tenant), event.doc_id)
        for _ in range(CAS_ATTEMPTS):
            current, revision = await self._read(key)
            updated = apply_event(current, event)
            if updated is None:
                return None
            try:
                if revision:
                    await self._kv.update(key, updated.encode(), last=revision)
                else:
                    await self._kv.create(key, updated.encode())
                return updated
            except KeyWrongLastSequenceError:  # another replica wrote it: re-read, re-apply
                continue
        raise RuntimeError(f"catalog record {key} kept changing under {CAS_ATTEMPTS} writes")

    async def _latest_values(self, tenant: str) -> AsyncIterator[bytes]:
        """Every record of `tenant`, streamed by one ephemeral pull consumer.

        Not `KeyValue.watch`: nats-py 2.16 may send its end-of-values marker before
        the values already delivered (seen here: an empty page for a one-record
        tenant). The count the consumer starts with says when all were read.
        """
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=SCAN_IDLE_S,
            mem_storage=True,
        )
        stream = f"KV_{DOCUMENT_CATALOG_BUCKET}"
        subject = f"$KV.{DOCUMENT_CATALOG_BUCKET}.{tenant}.*"
        sub = await self._js.pull_subscribe(subject, stream=stream, config=config)
        info = await sub.consumer_info()
        try:
            remaining = info.num_pending or 0
            while remaining > 0:
                msgs = await sub.fetch(min(remaining, SCAN_BATCH), timeout=SCAN_IDLE_S)
                remaining -= len(msgs)
                for msg in msgs:
                    if msg.data and not (msg.headers or {}).get(KV_OPERATION):
                        yield msg.data
        finally:
            await sub.unsubscribe()
            with contextlib.suppress(Exception):  # else it goes after SCAN_IDLE_S on its own
                await self._js.delete_consumer(stream, info.name)

    async def page(
        self,
        tenant: str,
        *,
        after: str,
        limit: int,
        collection: str = "",
        include_deleted: bool = False,
    ) -> Page:
        """The first `limit` records (by doc_id) after `after`.

        Keys are hashed, so ordering by doc_id means reading every record of the
        tenant: one consumer over `<tenant>.*` streams their latest values in
        batches (no round trip per key), and only about `limit` of them are kept.
        """
        candidates: list[CatalogRecord] = []
        async for value in self._latest_values(tenant):
            record = CatalogRecord.decode(value)
            if (
                record.doc_id > after
                and (not collection or record.collection == collection)
                and (include_deleted or not record.deleted)
            ):
                candidates.append(record)
                if len(candidates) > 2 * (limit + 1):  # memory stays O(limit)
                    candidates = _first(candidates, limit + 1)
        first = _first(candidates, limit + 1)
        return Page(first[:limit], len(first) > limit)


def _first(records: list[CatalogRecord], n: int) -> list[CatalogRecord]:
    return heapq.nsmallest(n, records, key=lambda r: r.doc_id)


class CatalogHandler:
    """The `catalog` stage: applies each document event to the catalog, in stream order
    per document; events of different documents are written concurrently."""

    def __init__(self, js: Callable[[], JetStreamContext]) -> None:
        self._js = js
        self.catalog: Loaded[DocumentCatalog] = Loaded("the document catalog")

    async def start(self) -> None:
        """Open the bucket (at start-up; the queries share it through `catalog`)."""
        self.catalog.set(await DocumentCatalog.open(self._js()))

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        by_document: dict[str, list[tuple[Delivery, events_pb2.DocumentEvent]]] = {}
        for delivery in batch:
            try:
                event = _document_event(delivery)
            except PoisonMessage as exc:
                delivery.fail(exc)
                continue
            if event is not None:
                key = catalog_key(catalog_tenant(event.tenant), event.doc_id)
                by_document.setdefault(key, []).append((delivery, event))
        await asyncio.gather(*(self._apply(events) for events in by_document.values()))

    async def _apply(self, events: list[tuple[Delivery, events_pb2.DocumentEvent]]) -> None:
        catalog = self.catalog.value
        for index, (_, event) in enumerate(events):
            try:
                await catalog.record(event)
            except Exception as exc:
                # This and the document's later events go back together, keeping their order.
                for later, _ in events[index:]:
                    later.fail(exc)
                return


def _document_event(delivery: Delivery) -> events_pb2.DocumentEvent | None:
    """The event, None for one about no document (an undecodable message's failure:
    the dead letter has it), PoisonMessage for one that is not a document event."""
    try:
        event = decode(delivery.data, delivery.headers, events_pb2.DocumentEvent)
    except MalformedMessage as exc:
        raise PoisonMessage(f"not a DocumentEvent: {exc}") from exc
    delivery.tenant, delivery.doc_id = event.tenant, event.doc_id
    if event.status == _STATUS.DOCUMENT_STATUS_UNSPECIFIED:
        raise PoisonMessage("document event without a status", doc_id=event.doc_id)
    return event if event.doc_id else None
