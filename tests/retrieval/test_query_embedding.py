"""Query vectors in retrieval's own process (`local`) and from the embedding service
(`remote`): the same vectors, the same rankings, and what happens when the service is down.

Everything is real: the exported model, an embedding service process on its own NATS,
a Qdrant Edge shard, and `RetrievalServicer` behind a grpc.aio server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from nats.js import JetStreamContext

from llmops.grpcutil import channel, lazy_stub
from llmops.service import Loaded
from llmops.v1 import embedding_pb2, embedding_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from retrieval.handlers import RetrievalServicer
from retrieval.query_embedding import LocalQueryEmbedder, QueryEmbedder, RemoteQueryEmbedder
from retrieval.settings import RetrievalSettings
from retrieval.store import AnswerStore, EdgeStore, VectorStore
from tests.retrieval.test_store import chunk
from tests.support import ServiceProcess, free_port

QUERIES = [
    "how often should I oil my bike chain",
    "Vitamin D deficiency is linked to multiple sclerosis.",
    "What does NATS JetStream acknowledge?",
    "0-dimensional biomaterials show inductive properties.",
    "refund policy",
    "a",
]
PASSAGES = [
    "Oil the bike chain every 500 km, more often after rain.",
    "Low vitamin D levels are associated with a higher risk of multiple sclerosis.",
    "JetStream acknowledges a publish once the stream has stored the message.",
    "Refunds are processed within five business days of receiving the item.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
]
HYBRID = retrieval_pb2.SEARCH_MODE_HYBRID


@pytest.fixture(scope="module")
async def embedding(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    service = ServiceProcess("embedding", nats_url, tmp_path_factory.mktemp("embedding"))
    service.start()
    await service.wait_healthy(timeout_s=120)
    yield service
    service.stop()
    await service.close()


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[LocalQueryEmbedder]:
    embedder = LocalQueryEmbedder(RetrievalSettings())
    await embedder.start()
    yield embedder
    await embedder.close()


@pytest.fixture(scope="module")
def remote(embedding: ServiceProcess) -> RemoteQueryEmbedder:
    return RemoteQueryEmbedder(lazy_stub(embedding_pb2_grpc.EmbeddingStub, embedding.addr))


@contextlib.asynccontextmanager
async def serving(
    embedder: QueryEmbedder, path: Path
) -> AsyncIterator[tuple[retrieval_pb2_grpc.RetrievalStub, EdgeStore]]:
    """`RetrievalServicer` on its own Edge shards, with `embedder`, over real gRPC."""
    store, cache = EdgeStore(path / "docs"), EdgeStore(path / "answers")
    docs: Loaded[VectorStore] = Loaded("docs")
    docs.set(store)
    answers: Loaded[AnswerStore] = Loaded("answers")
    answers.set(cache)
    server = grpc.aio.server()
    servicer = RetrievalServicer(docs, embedder, RetrievalSettings(), answers)
    retrieval_pb2_grpc.add_RetrievalServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with channel(f"127.0.0.1:{port}") as ch:
            yield retrieval_pb2_grpc.RetrievalStub(ch), store
    finally:
        await server.stop(None)
        store.close()
        cache.close()


async def test_both_forms_give_the_embedding_service_s_vectors_exactly(
    local: LocalQueryEmbedder, remote: RemoteQueryEmbedder
) -> None:
    for text in QUERIES:
        assert await local.embed(text, 5.0) == await remote.embed(text, 5.0)


async def test_a_vector_does_not_depend_on_the_queries_in_flight_beside_it(
    local: LocalQueryEmbedder,
) -> None:
    alone = [await local.embed(text, 5.0) for text in QUERIES]
    together = await asyncio.gather(*(local.embed(text, 5.0) for text in QUERIES * 4))
    assert list(together) == alone * 4


async def test_searches_rank_the_same_with_either_form_and_stay_in_the_tenant(
    local: LocalQueryEmbedder,
    remote: RemoteQueryEmbedder,
    embedding: ServiceProcess,
    tmp_path: Path,
) -> None:
    """Passages embedded by the service, as documents are; queries by each form in turn."""
    reply = await embedding_pb2_grpc.EmbeddingStub(embedding.channel).Embed(
        embedding_pb2.EmbedRequest(texts=PASSAGES), timeout=30
    )
    vectors = [list(v.values) for v in reply.vectors]
    chunks = {
        tenant: [
            chunk(tenant, f"doc{i}", 1, 0, text, dense=vector)
            for i, (text, vector) in enumerate(zip(PASSAGES, vectors, strict=True))
        ]
        for tenant in ("acme", "other")
    }
    mine = {c.chunk_id for c in chunks["acme"]}
    rankings = []
    for form, embedder in (("local", local), ("remote", remote)):
        async with serving(embedder, tmp_path / form) as (stub, store):
            for tenant, records in chunks.items():
                for c in records:
                    store.replace_document(tenant, c.doc_id, 1, [c])
            ranking = []
            for text in QUERIES:
                found = await stub.Search(
                    retrieval_pb2.SearchRequest(tenant="acme", query=text, top_k=5, mode=HYBRID)
                )
                assert found.hits and {h.chunk_id for h in found.hits} <= mine
                ranking.append([(h.chunk_id, h.score) for h in found.hits])
            rankings.append(ranking)
    assert rankings[0] == rankings[1]
    assert rankings[0][0][0][0] == chunks["acme"][0].chunk_id  # the bike chain passage first


async def test_remote_form_with_the_embedding_service_down_is_unavailable(
    tmp_path: Path,
) -> None:
    nobody = RemoteQueryEmbedder(
        lazy_stub(embedding_pb2_grpc.EmbeddingStub, f"127.0.0.1:{free_port()}")
    )
    async with serving(nobody, tmp_path) as (stub, _):
        for request, needs in [
            (retrieval_pb2.SearchRequest(query="q", mode=HYBRID), "hybrid search"),
            (retrieval_pb2.SearchRequest(query="q", mode=retrieval_pb2.SEARCH_MODE_DENSE), ""),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Search(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "the embedding service did not embed the query" in str(refused.value.details())
            assert needs in str(refused.value.details())
        sparse = retrieval_pb2.SearchRequest(query="q", mode=retrieval_pb2.SEARCH_MODE_SPARSE)
        assert list((await stub.Search(sparse, timeout=10)).hits) == []
        for call, ask in [
            (stub.LookupAnswer, retrieval_pb2.LookupAnswerRequest(question="q")),
            (stub.StoreAnswer, retrieval_pb2.StoreAnswerRequest(question="q", answer=b"a")),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(ask, timeout=10)  # type: ignore[operator]
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "answer cache" in str(refused.value.details())


async def test_the_retrieval_service_embeds_queries_itself_by_default(
    nats_url: str, js: JetStreamContext, tmp_path: Path
) -> None:
    """No embedding service anywhere: hybrid search still answers."""
    service = ServiceProcess(
        "retrieval", nats_url, tmp_path, LLMOPS_EMBEDDING_ADDR=f"127.0.0.1:{free_port()}"
    )
    service.start()
    try:
        await service.wait_healthy(timeout_s=120)
        stub = retrieval_pb2_grpc.RetrievalStub(service.channel)
        reply = await stub.Search(retrieval_pb2.SearchRequest(query="q", mode=HYBRID), timeout=10)
        assert list(reply.hits) == []
        assert "retrieval.query_model_loaded" in service.log()
    finally:
        service.stop()
        await service.close()
