"""GetChunks: a tenant's chunks by id, in the order asked, never another tenant's, on both
store adapters and through the gRPC handler."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmops.service import Loaded
from llmops.v1 import retrieval_pb2
from retrieval.handlers import RetrievalServicer
from retrieval.query_embedding import query_embedder
from retrieval.settings import RetrievalSettings
from retrieval.store import EdgeStore, VectorStore
from tests.retrieval.test_answers import Aborted, Context
from tests.retrieval.test_store import DIM, doc, store

__all__ = ["store"]  # the edge and server stores of test_store.py
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")


def test_chunks_come_back_in_the_order_asked_and_only_the_tenants(store: VectorStore) -> None:
    mine = doc("acme", "manual", 1, ["Oil the chain.", "Check the brakes.", "Pump the tyres."])
    theirs = doc("other", "secret", 1, ["Their private text."])
    store.replace_document("acme", "manual", 1, mine)
    store.replace_document("other", "secret", 1, theirs)
    asked = [
        mine[2].chunk_id,
        theirs[0].chunk_id,
        str(uuid.uuid4()),
        "not-a-uuid",
        mine[0].chunk_id,
    ]
    hits = store.get_chunks("acme", asked)
    assert [h.chunk_id for h in hits] == [mine[2].chunk_id, mine[0].chunk_id]
    assert [h.text for h in hits] == ["Pump the tyres.", "Oil the chain."]
    assert all(h.score == 0.0 and h.doc_id == "manual" and h.version == 1 for h in hits)
    assert store.get_chunks("other", [mine[0].chunk_id]) == []
    assert [h.text for h in store.get_chunks("other", [theirs[0].chunk_id])] == [
        "Their private text."
    ]
    assert store.get_chunks("acme", []) == []


def test_a_replaced_version_s_chunks_are_gone(store: VectorStore) -> None:
    old = doc("acme", "manual", 1, ["Old text."])
    new = doc("acme", "manual", 2, ["New text."])
    store.replace_document("acme", "manual", 1, old)
    store.replace_document("acme", "manual", 2, new)
    ids = [old[0].chunk_id, new[0].chunk_id]
    assert [h.text for h in store.get_chunks("acme", ids)] == ["New text."]


async def test_the_handler_scopes_to_the_request_tenant_and_bounds_the_ids(tmp_path: Path) -> None:
    edge = EdgeStore(tmp_path / "qdrant", dim=DIM)
    chunks = doc("default", "faq", 1, ["First.", "Second."])
    edge.replace_document("default", "faq", 1, chunks)
    box: Loaded[VectorStore] = Loaded("docs")
    box.set(edge)
    settings = RetrievalSettings(search_max_k=3)
    servicer = RetrievalServicer(box, query_embedder(settings), settings)  # never started
    context: Any = Context()
    ids = [c.chunk_id for c in reversed(chunks)]
    reply = await servicer.GetChunks(retrieval_pb2.GetChunksRequest(chunk_ids=ids), context)
    assert [c.text for c in reply.chunks] == ["Second.", "First."]  # "" is tenant default
    foreign = retrieval_pb2.GetChunksRequest(tenant="acme", chunk_ids=ids)
    assert list((await servicer.GetChunks(foreign, context)).chunks) == []
    with pytest.raises(Aborted) as refused:
        too_many = retrieval_pb2.GetChunksRequest(chunk_ids=[str(uuid.uuid4()) for _ in range(4)])
        await servicer.GetChunks(too_many, context)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    edge.close()
