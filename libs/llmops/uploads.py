"""Documents too large for a bus message: their bytes wait in the JetStream object store.

A publisher uploads the bytes to the `llmops_uploads` bucket under
`<tenant>/<sha256>` (content-addressed, so the same file uploaded twice is
stored once) and publishes a Document whose `content_ref` names them; ingestion
streams the object to a spool file (bounded memory), checks its size and digest,
and removes it once the document's outcome is recorded. Everything that
publishes documents goes through `publish_document`, so the rule (inline up to
INLINE_CONTENT_BYTES, by reference above) lives in one place.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMeta
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from llmops.bus.codec import CONTENT_TYPE, PROTOBUF
from llmops.bus.objects import open_object_store
from llmops.bus.topology import DOCS_INGEST, OBJECT_BUCKETS, UPLOADS_BUCKET
from llmops.v1 import documents_pb2

# Content up to this size travels in the message; above it, by reference. Well under
# the bus's 16 MB so the rest of the Document (metadata, title) always fits.
INLINE_CONTENT_BYTES = 8 * 1024 * 1024
_READ_BLOCK = 1024 * 1024


class UploadMissing(Exception):
    """The referenced object is not in the store (removed, or never uploaded)."""


class UploadMismatch(Exception):
    """The object's size or digest differs from the reference's: not the bytes it names."""


async def _uploads(js: JetStreamContext, bucket: str = "") -> ObjectStore:
    name = bucket or UPLOADS_BUCKET
    return await open_object_store(js, name, OBJECT_BUCKETS.get(name, "documents by reference"))


def sha256_of(stream: io.BufferedIOBase) -> tuple[str, int]:
    """Hex digest and size of a stream, read in blocks (a 200 MB file never sits in memory)."""
    digest = hashlib.sha256()
    size = 0
    while block := stream.read(_READ_BLOCK):
        digest.update(block)
        size += len(block)
    stream.seek(0)
    return digest.hexdigest(), size


def _holds(info: ObjectInfo, sha256: str, size: int) -> bool:
    """Whether the object is those bytes: its size, and its digest in the form NATS object
    info carries it (`SHA-256=<base64url of the digest>`)."""
    digest = "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode()
    return info.size == size and (info.digest or "") == digest


async def upload(
    js: JetStreamContext, tenant: str, stream: io.BufferedIOBase, *, keep: bool = False
) -> documents_pb2.ContentRef:
    """Put the stream's bytes in the uploads bucket (skipped when already there)."""
    sha, size = await asyncio.to_thread(sha256_of, stream)
    name = f"{tenant}/{sha}"
    store = await _uploads(js)
    try:
        present = _holds(await store.get_info(name), sha, size)
    except NotFoundError:
        present = False
    if not present:
        await store.put(name, stream, meta=ObjectMeta(name=name))
    return documents_pb2.ContentRef(
        bucket=UPLOADS_BUCKET, name=name, sha256=sha, size=size, keep=keep
    )


async def download(
    js: JetStreamContext, ref: documents_pb2.ContentRef, into: io.BufferedIOBase
) -> None:
    """Stream the referenced object into `into`, checking that it is the bytes named."""
    store = await _uploads(js, ref.bucket)
    try:
        info = await store.get_info(ref.name)
    except NotFoundError as exc:
        bucket = ref.bucket or UPLOADS_BUCKET
        raise UploadMissing(f"object {ref.name!r} is not in bucket {bucket!r}") from exc
    if not _holds(info, ref.sha256, ref.size):
        raise UploadMismatch(
            f"object {ref.name!r} is {info.size} bytes with digest {info.digest}; "
            f"the reference says {ref.size} bytes, sha256 {ref.sha256}"
        )
    await store.get(ref.name, writeinto=into)


async def remove(js: JetStreamContext, ref: documents_pb2.ContentRef) -> None:
    """Delete the object (a no-op when it is already gone)."""
    store = await _uploads(js, ref.bucket)
    with contextlib.suppress(NotFoundError):
        await store.delete(ref.name)


async def publish_document(
    js: JetStreamContext,
    doc: documents_pb2.Document,
    file: Path | None = None,
    *,
    keep: bool = False,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish durably. Content over INLINE_CONTENT_BYTES goes to the object store first
    and the message carries its reference; a `file` is read from disk in blocks, so a
    large one never sits in memory. `keep` asks ingestion to leave the object there."""
    tenant = doc.tenant or "default"
    if file is not None and (await asyncio.to_thread(file.stat)).st_size > INLINE_CONTENT_BYTES:
        with file.open("rb") as stream:
            doc.content_ref.CopyFrom(await upload(js, tenant, stream, keep=keep))
    elif file is not None:
        doc.content = await asyncio.to_thread(file.read_bytes)
    if len(doc.content) > INLINE_CONTENT_BYTES:
        ref = await upload(js, tenant, io.BytesIO(doc.content), keep=keep)
        doc.content_ref.CopyFrom(ref)
        doc.ClearField("content")
    await js.publish(
        DOCS_INGEST, doc.SerializeToString(), headers={CONTENT_TYPE: PROTOBUF, **(headers or {})}
    )
