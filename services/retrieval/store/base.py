"""The store interface the retrieval service codes against, with one adapter per Qdrant flavour.

Settings pick the adapter: Qdrant Edge in-process by default, a Qdrant server
or cluster when `LLMOPS_QDRANT_URL` is set. The service depends only on this module.
Each adapter class implements both protocols here; the service opens one instance
for documents (`VectorStore`) and a separate one, on its own shard or collection, for
the semantic answer cache (`AnswerStore`), so cached answers can never reach a search.
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
    """A ranked chunk; `score` is cosine, BM25 or fused by mode, so compare only within one mode."""

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


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One cached answer: `dense` is the embedded question, `answer` is opaque bytes.

    At most one record per (tenant, scope, question): storing it again overwrites.
    """

    tenant: str
    scope: str
    question: str
    answer: bytes
    dense: Sequence[float]
    stored_at_ms: int


@dataclass(frozen=True, slots=True)
class AnswerLookup:
    """The nearest cached question of `tenant` in `scope` with cosine >= `min_score`.

    `stored_after_ms` > 0 ignores answers stored before it (the caller's max age).
    """

    tenant: str
    scope: str
    dense: Sequence[float]
    min_score: float
    stored_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class AnswerHit:
    score: float
    question: str
    answer: bytes
    stored_at_ms: int


class AnswerStore(Protocol):
    """The semantic answer cache: dense cosine lookup, scoped by tenant and scope in the engine.

    Synchronous like VectorStore. Failures raise StoreError; invalid arguments ValueError.
    """

    def put_answer(self, answer: AnswerRecord) -> None:
        """Store or overwrite the answer of (tenant, scope, question)."""
        ...

    def find_answer(self, lookup: AnswerLookup) -> AnswerHit | None:
        """The best match at or above `min_score`, or None."""
        ...

    def expire_answers(self, stored_before_ms: int) -> int:
        """Delete every tenant's answers stored before `stored_before_ms`; how many went."""
        ...

    def count_answers(self) -> int:
        """Cached answers of all tenants."""
        ...

    def optimize(self) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


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

    def get_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> list[Hit]:
        """The tenant's live chunks among `chunk_ids`, in the order asked (score 0).

        Ids the tenant has no chunk for (unknown, another tenant's, not a UUID) are left out.
        """
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
