"""The store interface the retrieval service codes against, with one adapter per Qdrant flavour.

Settings pick the adapter: Qdrant Edge in-process by default, a Qdrant server
or cluster when `LLMOPS_QDRANT_URL` is set. The service depends only on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

SearchMode = Literal["hybrid", "dense", "sparse"]


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """One embedded chunk as stored: the unit of retrieval.

    `chunk_id` is a UUID string and becomes the Qdrant point id; ingestion derives it
    from (tenant, doc, version, position), so redelivery overwrites instead of duplicating.
    `dense` is the 384-d L2-normalised embedding.
    """

    chunk_id: str
    tenant: str
    doc_id: str
    collection: str
    version: int
    index: int
    text: str
    heading: str
    source: str
    title: str
    metadata: dict[str, str]
    dense: Sequence[float]


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """One search: always scoped to `tenant`; `collection` "" means all the tenant's collections.

    `filters` must equal document metadata exactly. `dense` is the embedded query text;
    it may be None only in sparse mode, which needs no embedding.
    """

    tenant: str
    text: str
    dense: Sequence[float] | None
    top_k: int
    collection: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    mode: SearchMode = "hybrid"


@dataclass(frozen=True, slots=True)
class Hit:
    """A ranked chunk; `score` is cosine, BM25 or RRF by mode, so compare only within one mode."""

    chunk_id: str
    doc_id: str
    score: float
    text: str
    source: str
    title: str
    heading: str
    index: int
    version: int
    collection: str
    metadata: dict[str, str]


class VectorStore(Protocol):
    """Document-versioned chunk storage with tenant-scoped hybrid search.

    Synchronous on purpose: the service calls it on its event-loop thread, so with the
    in-process Edge store no search can run between the steps of one replace.
    Failures of the store raise StoreError; invalid arguments raise ValueError.
    """

    def replace_document(
        self, tenant: str, doc_id: str, version: int, chunks: Sequence[ChunkRecord]
    ) -> bool:
        """Make exactly `chunks` the content of the document at `version`.

        False, and nothing changed, when the store already holds a newer version or a
        deletion at this version (a stale redelivery). Re-applying the current version
        succeeds and changes nothing, since point ids are deterministic.
        """
        ...

    def delete_document(self, tenant: str, doc_id: str, version: int) -> bool:
        """Remove the document's chunks older than `version` and keep a tombstone.

        The tombstone makes a later-arriving older version stale. False, and nothing
        changed, when a version >= `version` is already stored or tombstoned.
        """
        ...

    def document_version(self, tenant: str, doc_id: str) -> int | None:
        """The latest version stored or tombstoned for the document; None if never seen."""
        ...

    def search(self, query: SearchQuery) -> list[Hit]:
        """Up to `top_k` live chunks of the query's tenant, best first; filtered in the engine."""
        ...

    def count(self, tenant: str) -> int:
        """Live chunks of `tenant` (tombstones excluded)."""
        ...

    def optimize(self) -> None:
        """Vacuum deleted points and build indexes where the engine does not do it itself.

        Blocking, and for Edge it holds the GIL for the whole run: call it at start-up
        or when idle, not per request.
        """
        ...

    def flush(self) -> None:
        """Persist everything written so far."""
        ...

    def close(self) -> None:
        """Flush and release the store; the object is unusable afterwards."""
        ...
