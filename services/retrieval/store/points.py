"""How documents and cached answers are laid out as Qdrant points, shared by both adapters.

A document is its chunk points (payload `kind="chunk"`, dense + BM25 vectors) and one
marker point (`kind="doc"`, payload only, no vectors) whose id derives from
(tenant, doc_id). The marker holds the document's latest version and whether that
version is a deletion, so version checks are one point lookup, and a tombstone is
simply a marker with `deleted=True`: having no vectors, it can never be a search hit,
and every search and count filters on `kind="chunk"` besides.

A cached answer (`kind="answer"`) is one point with a dense vector only, whose id
derives from (tenant, scope, question); answers live in a store instance of their own
(another Edge shard, another server collection), never beside document chunks.

Filters are written once here as small neutral specs; each adapter translates them
into its client library's classes, so both enforce the same tenant scoping.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from retrieval.store.base import (
    AnswerHit,
    AnswerLookup,
    AnswerRecord,
    ChunkRecord,
    Hit,
    SearchQuery,
)

DENSE = "dense"
SPARSE = "bm25"
RRF_K = 60
"""The k of reciprocal rank fusion from the original paper (Qdrant's default is 2)."""

Fusion = Literal["dbsf", "rrf"]
"""How hybrid search merges its dense and BM25 candidates (`LLMOPS_HYBRID_FUSION`).

`dbsf`, distribution-based score fusion (Qdrant's `Fusion.Dbsf`), scales each side's
scores by that side's own mean +- 3 standard deviations over its candidates and adds
them: how far a chunk stands out on each side counts, not just its rank. `rrf` adds
1/(k + rank) per side and throws the score gaps away, so a clear BM25 winner weighs no
more than a near tie. On SciFact (docs/retrieval.md) DBSF beat RRF on the tuning
queries (train claims) and the test queries alike; it has no parameter to tune.
"""
DEFAULT_FUSION: Fusion = "dbsf"

TENANT_FIELD = "tenant"
KEYWORD_FIELDS = ("doc_id", "collection", "kind", "meta_kv", "scope")
INTEGER_FIELDS = ("version", "stored_at_ms")

_CHUNK = "chunk"
_MARKER = "doc"
_MARKER_NAMESPACE = uuid.UUID("5b0c7f1e-3d0a-4c55-9a47-2f8e6f1d9c21")
_ANSWER = "answer"
_ANSWER_NAMESPACE = uuid.UUID("0e6b1f4a-8c2d-4f3b-b5a9-6d7e1c2a9f40")

Payload = dict[str, Any]
"""A JSON object as Qdrant stores it (values are whatever JSON decoding gives)."""


@dataclass(frozen=True, slots=True)
class Match:
    """Payload field `key` equals `value` (for an array field: one element does)."""

    key: str
    value: str | int


@dataclass(frozen=True, slots=True)
class Below:
    """Integer payload field `key` is < `bound`, or <= when `inclusive`."""

    key: str
    bound: int
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class AtLeast:
    """Integer payload field `key` is >= `bound`."""

    key: str
    bound: int


Condition = Match | Below | AtLeast


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """All of `must`, and the point id not in `must_not_ids`."""

    must: tuple[Condition, ...]
    must_not_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DocState:
    """What the marker point says about a document."""

    version: int
    deleted: bool


def marker_id(tenant: str, doc_id: str) -> str:
    """Deterministic point id of a document's marker."""
    return str(uuid.uuid5(_MARKER_NAMESPACE, json.dumps([tenant, doc_id])))


def _meta_token(key: str, value: str) -> str:
    # One keyword per metadata pair keeps every filter on one indexed field and avoids
    # JSON-path quoting of arbitrary keys; JSON makes the pair unambiguous.
    return json.dumps([key, value], ensure_ascii=False, separators=(",", ":"))


def chunk_payload(chunk: ChunkRecord) -> Payload:
    """Payload of a chunk point: what a hit returns plus the fields filters use."""
    return {
        "kind": _CHUNK,
        "tenant": chunk.tenant,
        "doc_id": chunk.doc_id,
        "collection": chunk.collection,
        "version": chunk.version,
        "index": chunk.index,
        "text": chunk.text,
        "heading": chunk.heading,
        "source": chunk.source,
        "title": chunk.title,
        "meta": dict(chunk.metadata),
        "meta_kv": [_meta_token(k, v) for k, v in chunk.metadata.items()],
    }


def marker_payload(tenant: str, doc_id: str, version: int, *, deleted: bool) -> Payload:
    """Payload of a document's marker point."""
    return {
        "kind": _MARKER,
        "tenant": tenant,
        "doc_id": doc_id,
        "version": version,
        "deleted": deleted,
    }


def doc_state(payload: Payload | None) -> DocState | None:
    """Decode a marker payload; None when the document was never seen."""
    if payload is None:
        return None
    return DocState(version=int(payload["version"]), deleted=bool(payload["deleted"]))


def may_replace(state: DocState | None, version: int) -> bool:
    """A newer version, or the same live version again (idempotent redelivery)."""
    if state is None or state.version < version:
        return True
    return state.version == version and not state.deleted


def may_delete(state: DocState | None, version: int) -> bool:
    """Only a deletion newer than anything stored or tombstoned."""
    return state is None or state.version < version


def bm25_text(chunk: ChunkRecord) -> str:
    """The text BM25 indexes: title and heading too, so a query naming a section matches."""
    return "\n".join(part for part in (chunk.title, chunk.heading, chunk.text) if part)


def check_chunks(
    tenant: str, doc_id: str, version: int, chunks: Sequence[ChunkRecord], dim: int
) -> None:
    """Refuse chunks that do not belong to this document version or have the wrong size."""
    for chunk in chunks:
        if (chunk.tenant, chunk.doc_id, chunk.version) != (tenant, doc_id, version):
            raise ValueError(
                f"chunk {chunk.chunk_id} is ({chunk.tenant}, {chunk.doc_id}, v{chunk.version}),"
                f" not ({tenant}, {doc_id}, v{version})"
            )
        if len(chunk.dense) != dim:
            raise ValueError(f"chunk {chunk.chunk_id} has {len(chunk.dense)} dims, expected {dim}")
        try:
            uuid.UUID(chunk.chunk_id)
        except ValueError:
            raise ValueError(f"chunk id {chunk.chunk_id!r} is not a UUID") from None


def check_query(query: SearchQuery, dim: int) -> None:
    """Refuse, before any engine call, queries the engine would reject less clearly."""
    if query.top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {query.top_k}")
    if query.mode != "sparse":
        dense_vector(query)
    if query.dense is not None and len(query.dense) != dim:
        raise ValueError(f"query vector has {len(query.dense)} dims, expected {dim}")


def dense_vector(query: SearchQuery) -> list[float]:
    """The query's dense vector, which dense and hybrid modes require."""
    if query.dense is None:
        raise ValueError(f"{query.mode} search needs the dense query vector")
    return list(query.dense)


def prefetch_limit(top_k: int) -> int:
    """Candidates each side contributes to hybrid fusion."""
    return max(50, 4 * top_k)


def tenant_chunks(tenant: str) -> FilterSpec:
    """The tenant's live chunks: what count() counts and the corpus BM25's IDF is computed over.

    A per-tenant IDF corpus keeps one tenant's documents from shifting another's ranking.
    """
    return FilterSpec(must=(Match(TENANT_FIELD, tenant), Match("kind", _CHUNK)))


def search_filter(query: SearchQuery) -> FilterSpec:
    """Tenant, collection and exact metadata matches: applied inside the engine's query."""
    must = list(tenant_chunks(query.tenant).must)
    if query.collection:
        must.append(Match("collection", query.collection))
    must.extend(Match("meta_kv", _meta_token(k, v)) for k, v in query.filters.items())
    return FilterSpec(must=tuple(must))


def _doc_chunks(tenant: str, doc_id: str) -> tuple[Match, ...]:
    return (Match(TENANT_FIELD, tenant), Match("doc_id", doc_id), Match("kind", _CHUNK))


def superseded_chunks(tenant: str, doc_id: str, version: int, keep: Sequence[str]) -> FilterSpec:
    """Chunks a replace by `version` removes: every version up to it, except the new ones.

    Never newer versions, so a replace that lost a race cannot wipe the winner's chunks.
    """
    return FilterSpec(
        must=(*_doc_chunks(tenant, doc_id), Below("version", version, inclusive=True)),
        must_not_ids=tuple(keep),
    )


def older_chunks(tenant: str, doc_id: str, version: int) -> FilterSpec:
    """Chunks a deletion at `version` removes."""
    return FilterSpec(must=(*_doc_chunks(tenant, doc_id), Below("version", version)))


def marker_older_than(version: int) -> FilterSpec:
    """Condition for updating an existing marker: versions only move forward."""
    return FilterSpec(must=(Below("version", version),))


def hit(point_id: str, score: float, payload: Payload) -> Hit:
    """A search hit from a chunk point."""
    return Hit(
        chunk_id=point_id,
        doc_id=str(payload["doc_id"]),
        score=float(score),
        text=str(payload["text"]),
        source=str(payload["source"]),
        title=str(payload["title"]),
        heading=str(payload["heading"]),
        index=int(payload["index"]),
        version=int(payload["version"]),
        collection=str(payload["collection"]),
        metadata={str(k): str(v) for k, v in payload["meta"].items()},
    )


def _point_id(chunk_id: str) -> str | None:
    """The id as the engine returns it (a canonical UUID), or None if it cannot name a point."""
    try:
        return str(uuid.UUID(chunk_id))
    except ValueError:
        return None


def point_ids(chunk_ids: Sequence[str]) -> list[str]:
    """The distinct point ids to look up for `chunk_ids` (ids that are no UUID match nothing)."""
    ids = (_point_id(c) for c in chunk_ids)
    return list(dict.fromkeys(i for i in ids if i is not None))


def chunks_in_order(tenant: str, chunk_ids: Sequence[str], found: dict[str, Payload]) -> list[Hit]:
    """The looked-up points that are the tenant's chunks, in the order of `chunk_ids` (score 0).

    Checked on the payload, so another tenant's chunk (or a marker, an answer) whose id a
    caller knows is never returned.
    """
    hits: list[Hit] = []
    for chunk_id in chunk_ids:
        point_id = _point_id(chunk_id)
        payload = found.get(point_id) if point_id is not None else None
        if payload and payload.get("kind") == _CHUNK and payload.get(TENANT_FIELD) == tenant:
            hits.append(hit(point_id or chunk_id, 0.0, payload))
    return hits


def answer_id(tenant: str, scope: str, question: str) -> str:
    """Deterministic point id of a cached answer: storing the same question again overwrites."""
    return str(uuid.uuid5(_ANSWER_NAMESPACE, json.dumps([tenant, scope, question])))


def check_answer(answer: AnswerRecord, dim: int) -> None:
    """Refuse answers the cache could not look up again."""
    if not answer.question:
        raise ValueError("the question of a cached answer is empty")
    if len(answer.dense) != dim:
        raise ValueError(f"answer vector has {len(answer.dense)} dims, expected {dim}")


def check_lookup(lookup: AnswerLookup, dim: int) -> None:
    if len(lookup.dense) != dim:
        raise ValueError(f"lookup vector has {len(lookup.dense)} dims, expected {dim}")
    if not 0.0 <= lookup.min_score <= 1.0:
        raise ValueError(f"min_score must be between 0 and 1, got {lookup.min_score}")


def answer_payload(answer: AnswerRecord) -> Payload:
    """Payload of an answer point; the answer bytes travel base64-encoded in JSON."""
    return {
        "kind": _ANSWER,
        "tenant": answer.tenant,
        "scope": answer.scope,
        "question": answer.question,
        "answer": base64.b64encode(answer.answer).decode("ascii"),
        "stored_at_ms": answer.stored_at_ms,
    }


def answer_filter(lookup: AnswerLookup) -> FilterSpec:
    """The tenant's answers in the lookup's scope, not older than `stored_after_ms`."""
    must: list[Condition] = [
        Match(TENANT_FIELD, lookup.tenant),
        Match("kind", _ANSWER),
        Match("scope", lookup.scope),
    ]
    if lookup.stored_after_ms > 0:
        must.append(AtLeast("stored_at_ms", lookup.stored_after_ms))
    return FilterSpec(must=tuple(must))


def expired_answers(stored_before_ms: int) -> FilterSpec:
    """Every tenant's answers stored before `stored_before_ms`."""
    return FilterSpec(must=(Match("kind", _ANSWER), Below("stored_at_ms", stored_before_ms)))


def all_answers() -> FilterSpec:
    return FilterSpec(must=(Match("kind", _ANSWER),))


def answer_hit(score: float, payload: Payload) -> AnswerHit:
    return AnswerHit(
        score=float(score),
        question=str(payload["question"]),
        answer=base64.b64decode(str(payload["answer"])),
        stored_at_ms=int(payload["stored_at_ms"]),
    )
