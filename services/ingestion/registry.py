"""The document registry: current version and content hash per (tenant, doc_id), in NATS KV.

It is what makes re-publishing the same content a no-op and gives each change
of a document the next version number. Writes are compare-and-set on the KV
revision, so two ingestion replicas never hand out the same version twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue


@dataclass(frozen=True)
class DocumentState:
    tenant: str
    doc_id: str
    version: int
    content_hash: str
    deleted: bool = False
    raw_sha256: str = ""  # of the uploaded bytes, for documents that came by reference


class VersionConflict(Exception):
    """Another writer changed the document between our read and write: retry the message."""


def _key(tenant: str, doc_id: str) -> str:
    # KV keys allow a small alphabet; doc ids are arbitrary (paths, URLs), so hash them.
    return hashlib.sha256(f"{tenant}\0{doc_id}".encode()).hexdigest()[:40]


class DocumentRegistry:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def get(self, tenant: str, doc_id: str) -> tuple[DocumentState | None, int]:
        """The state and its KV revision (0 when the document was never seen)."""
        try:
            entry = await self._kv.get(_key(tenant, doc_id))
        except KeyNotFoundError:
            return None, 0
        if entry.value is None:
            return None, entry.revision or 0
        return DocumentState(**json.loads(entry.value)), entry.revision or 0

    async def put(self, state: DocumentState, revision: int) -> None:
        value = json.dumps(asdict(state)).encode()
        key = _key(state.tenant, state.doc_id)
        try:
            if revision:
                await self._kv.update(key, value, last=revision)
            else:
                await self._kv.create(key, value)
        except KeyWrongLastSequenceError as exc:
            raise VersionConflict(f"{state.tenant}/{state.doc_id} changed concurrently") from exc
