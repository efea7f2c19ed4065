"""Qdrant server adapter: a Qdrant server or cluster through qdrant-client (`LLMOPS_QDRANT_URL`).

Same points, vectors and filters as the Edge adapter (see `points`), sent explicitly:
BM25 vectors come from the Edge embedder, which uses the server's token ids and formula.
Per-tenant IDF (`IdfCorpusParams`) needs Qdrant 1.19 or newer.

qdrant-client's local mode (`location=":memory:"`) runs this adapter in the tests and
supports all of it (IDF modifier, RRF with k, IDF corpus, conditional upserts); it only
warns that payload indexes have no effect there. It is far too slow for production.
"""

from __future__ import annotations

from collections.abc import Sequence

from qdrant_client import QdrantClient, models

from retrieval.store import points
from retrieval.store.base import (
    AnswerHit,
    AnswerLookup,
    AnswerRecord,
    ChunkRecord,
    Hit,
    SearchQuery,
)
from retrieval.store.errors import StoreError, store_errors
from retrieval.store.sparse import encode_document, encode_query


def _condition(cond: points.Condition) -> models.FieldCondition:
    if isinstance(cond, points.Match):
        return models.FieldCondition(key=cond.key, match=models.MatchValue(value=cond.value))
    if isinstance(cond, points.AtLeast):
        return models.FieldCondition(key=cond.key, range=models.Range(gte=cond.bound))
    bound = models.Range(lte=cond.bound) if cond.inclusive else models.Range(lt=cond.bound)
    return models.FieldCondition(key=cond.key, range=bound)


def _filter(spec: points.FilterSpec) -> models.Filter:
    must: list[models.Condition] = [_condition(c) for c in spec.must]
    must_not: list[models.Condition] | None = None
    if spec.must_not_ids:
        ids: list[models.ExtendedPointId] = list(spec.must_not_ids)
        must_not = [models.HasIdCondition(has_id=ids)]
    return models.Filter(must=must, must_not=must_not)


def _sparse(values: tuple[list[int], list[float]]) -> models.SparseVector:
    return models.SparseVector(indices=values[0], values=values[1])


def _idf(query: SearchQuery) -> models.SearchParams:
    """BM25's IDF from the query tenant's chunks only."""
    return models.SearchParams(
        idf=models.IdfCorpusParams(corpus=_filter(points.tenant_chunks(query.tenant)))
    )


class QdrantServerStore:
    """VectorStore or AnswerStore on one collection of a Qdrant server, created if missing.

    Use one instance per role: documents and cached answers each get a collection.

    A replace is one `batch_update_points` request: upsert the new chunks, delete the
    superseded ones, move the marker. The server applies a batch's operations in order
    but not as one transaction, so a search running in between may briefly see old and
    new chunks together (never neither: new chunks land before old ones go). The version
    check reads the marker before writing; if two writers race on one document, the
    conditional marker upsert keeps its version from going backwards and the delete
    never touches newer chunks, but the loser's chunks can linger until that document
    is next replaced or deleted.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str = "llmops_chunks",
        dim: int = 384,
        fusion: points.Fusion = points.DEFAULT_FUSION,
    ) -> None:
        self._client = client
        self._collection = collection
        self._dim = dim
        self._fusion = fusion
        with store_errors(f"preparing Qdrant collection {collection}"):
            self._ensure_collection()

    def _ensure_collection(self) -> None:
        if not self._client.collection_exists(self._collection):
            try:
                self._client.create_collection(
                    self._collection,
                    vectors_config={
                        points.DENSE: models.VectorParams(
                            size=self._dim, distance=models.Distance.COSINE
                        )
                    },
                    sparse_vectors_config={
                        points.SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)
                    },
                )
            except Exception:
                if not self._client.collection_exists(self._collection):
                    raise  # not a replica that created it first
        info = self._client.get_collection(self._collection)
        self._check_schema(info.config.params)
        wanted: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
            points.TENANT_FIELD: models.KeywordIndexParams(
                type=models.KeywordIndexType.KEYWORD, is_tenant=True
            ),
            **{name: models.PayloadSchemaType.KEYWORD for name in points.KEYWORD_FIELDS},
            **{name: models.PayloadSchemaType.INTEGER for name in points.INTEGER_FIELDS},
        }
        for name, schema in wanted.items():
            if name not in info.payload_schema:
                self._client.create_payload_index(self._collection, name, schema, wait=True)

    def _check_schema(self, params: models.CollectionParams) -> None:
        vectors = params.vectors if isinstance(params.vectors, dict) else {}
        sparse = params.sparse_vectors or {}
        dense = vectors.get(points.DENSE)
        bm25 = sparse.get(points.SPARSE)
        if dense is None or dense.size != self._dim or bm25 is None:
            raise StoreError(
                f"collection {self._collection} exists but lacks a {self._dim}-d vector"
                f" {points.DENSE!r} or a sparse vector {points.SPARSE!r}"
            )
        if bm25.modifier != models.Modifier.IDF:
            raise StoreError(f"collection {self._collection}: {points.SPARSE!r} lacks Modifier.IDF")

    def _doc_state(self, tenant: str, doc_id: str) -> points.DocState | None:
        records = self._client.retrieve(
            self._collection,
            [points.marker_id(tenant, doc_id)],
            with_payload=True,
            with_vectors=False,
        )
        return points.doc_state(records[0].payload if records else None)

    def _marker_op(
        self, tenant: str, doc_id: str, version: int, *, deleted: bool
    ) -> models.UpsertOperation:
        marker = models.PointStruct(
            id=points.marker_id(tenant, doc_id),
            vector={},
            payload=points.marker_payload(tenant, doc_id, version, deleted=deleted),
        )
        return models.UpsertOperation(
            upsert=models.PointsList(
                points=[marker], update_filter=_filter(points.marker_older_than(version))
            )
        )

    def _chunk_point(self, chunk: ChunkRecord) -> models.PointStruct:
        vectors: dict[str, models.Vector] = {
            points.DENSE: list(chunk.dense),
            points.SPARSE: _sparse(encode_document(points.bm25_text(chunk))),
        }
        return models.PointStruct(
            id=chunk.chunk_id, vector=vectors, payload=points.chunk_payload(chunk)
        )

    def replace_document(
        self, tenant: str, doc_id: str, version: int, chunks: Sequence[ChunkRecord]
    ) -> bool:
        points.check_chunks(tenant, doc_id, version, chunks, self._dim)
        stale = points.superseded_chunks(tenant, doc_id, version, [c.chunk_id for c in chunks])
        ops: list[models.UpdateOperation] = []
        if chunks:
            upsert = models.PointsList(points=[self._chunk_point(c) for c in chunks])
            ops.append(models.UpsertOperation(upsert=upsert))
        ops.append(models.DeleteOperation(delete=models.FilterSelector(filter=_filter(stale))))
        ops.append(self._marker_op(tenant, doc_id, version, deleted=False))
        with store_errors(f"replacing document {tenant}/{doc_id} v{version}"):
            if not points.may_replace(self._doc_state(tenant, doc_id), version):
                return False
            self._client.batch_update_points(self._collection, ops, wait=True)
        return True

    def delete_document(self, tenant: str, doc_id: str, version: int) -> bool:
        old = points.older_chunks(tenant, doc_id, version)
        ops: list[models.UpdateOperation] = [
            models.DeleteOperation(delete=models.FilterSelector(filter=_filter(old))),
            self._marker_op(tenant, doc_id, version, deleted=True),
        ]
        with store_errors(f"deleting document {tenant}/{doc_id} v{version}"):
            if not points.may_delete(self._doc_state(tenant, doc_id), version):
                return False
            self._client.batch_update_points(self._collection, ops, wait=True)
        return True

    def document_version(self, tenant: str, doc_id: str) -> int | None:
        with store_errors(f"reading the version of {tenant}/{doc_id}"):
            state = self._doc_state(tenant, doc_id)
        return None if state is None else state.version

    def search(self, query: SearchQuery) -> list[Hit]:
        points.check_query(query, self._dim)
        flt = _filter(points.search_filter(query))
        with store_errors(f"searching for tenant {query.tenant}"):
            if query.mode == "dense":
                found = self._client.query_points(
                    self._collection,
                    query=points.dense_vector(query),
                    using=points.DENSE,
                    query_filter=flt,
                    limit=query.top_k,
                    with_payload=True,
                )
            elif query.mode == "sparse":
                found = self._client.query_points(
                    self._collection,
                    query=_sparse(encode_query(query.text)),
                    using=points.SPARSE,
                    query_filter=flt,
                    search_params=_idf(query),
                    limit=query.top_k,
                    with_payload=True,
                )
            else:
                pre = points.prefetch_limit(query.top_k)
                found = self._client.query_points(
                    self._collection,
                    prefetch=[
                        models.Prefetch(
                            query=points.dense_vector(query),
                            using=points.DENSE,
                            filter=flt,
                            limit=pre,
                        ),
                        models.Prefetch(
                            query=_sparse(encode_query(query.text)),
                            using=points.SPARSE,
                            filter=flt,
                            params=_idf(query),
                            limit=pre,
                        ),
                    ],
                    query=self._fused(),
                    query_filter=flt,
                    limit=query.top_k,
                    with_payload=True,
                )
        return [points.hit(str(p.id), p.score, p.payload or {}) for p in found.points]

    def _fused(self) -> models.RrfQuery | models.FusionQuery:
        if self._fusion == "rrf":
            return models.RrfQuery(rrf=models.Rrf(k=points.RRF_K))
        return models.FusionQuery(fusion=models.Fusion.DBSF)

    def get_chunks(self, tenant: str, chunk_ids: Sequence[str]) -> list[Hit]:
        ids: list[models.ExtendedPointId] = list(points.point_ids(chunk_ids))
        with store_errors(f"reading chunks of tenant {tenant}"):
            records = self._client.retrieve(
                self._collection, ids, with_payload=True, with_vectors=False
            )
        found = {str(r.id): r.payload or {} for r in records}
        return points.chunks_in_order(tenant, chunk_ids, found)

    def count(self, tenant: str) -> int:
        flt = _filter(points.tenant_chunks(tenant))
        with store_errors(f"counting chunks of tenant {tenant}"):
            return self._client.count(self._collection, count_filter=flt, exact=True).count

    def put_answer(self, answer: AnswerRecord) -> None:
        points.check_answer(answer, self._dim)
        vectors: dict[str, models.Vector] = {points.DENSE: list(answer.dense)}
        point = models.PointStruct(
            id=points.answer_id(answer.tenant, answer.scope, answer.question),
            vector=vectors,
            payload=points.answer_payload(answer),
        )
        with store_errors(f"storing an answer for tenant {answer.tenant}"):
            self._client.upsert(self._collection, [point], wait=True)

    def find_answer(self, lookup: AnswerLookup) -> AnswerHit | None:
        points.check_lookup(lookup, self._dim)
        with store_errors(f"looking up an answer for tenant {lookup.tenant}"):
            found = self._client.query_points(
                self._collection,
                query=list(lookup.dense),
                using=points.DENSE,
                query_filter=_filter(points.answer_filter(lookup)),
                score_threshold=lookup.min_score,
                limit=1,
                with_payload=True,
            )
        best = [p for p in found.points if p.score >= lookup.min_score]
        return points.answer_hit(best[0].score, best[0].payload or {}) if best else None

    def expire_answers(self, stored_before_ms: int) -> int:
        flt = _filter(points.expired_answers(stored_before_ms))
        with store_errors("expiring cached answers"):
            expired = self._client.count(self._collection, count_filter=flt, exact=True).count
            if expired:
                self._client.delete(self._collection, models.FilterSelector(filter=flt), wait=True)
        return expired

    def count_answers(self) -> int:
        flt = _filter(points.all_answers())
        with store_errors("counting cached answers"):
            return self._client.count(self._collection, count_filter=flt, exact=True).count

    def optimize(self) -> None:
        """Nothing to do: the server vacuums and indexes in the background."""

    def flush(self) -> None:
        """Nothing to do: writes are sent with wait=True, acknowledged once in the server's WAL."""

    def close(self) -> None:
        with store_errors("closing the Qdrant client"):
            self._client.close()
