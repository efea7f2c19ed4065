"""The semantic answer cache's store, run against both adapters, and its gRPC handlers.

Vectors are made here, never by the embedding model: a "paraphrase" is a unit vector
close to the question's, an unrelated question a nearly orthogonal one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient

from llmops.service import Loaded
from llmops.v1 import embedding_pb2, retrieval_pb2
from retrieval.handlers import RetrievalServicer
from retrieval.maintenance import AnswerExpiry
from retrieval.query_embedding import RemoteQueryEmbedder
from retrieval.settings import RetrievalSettings
from retrieval.store import (
    AnswerLookup,
    AnswerRecord,
    AnswerStore,
    EdgeStore,
    QdrantServerStore,
    SearchQuery,
    VectorStore,
    factory,
    open_answer_store,
    open_store,
)
from retrieval.vectors import QueryVectors

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect")

DIM = 384
NOW_MS = 1_700_000_000_000


def unit(seed: str) -> list[float]:
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8]))
    v = rng.normal(size=DIM)
    return [float(x) for x in v / np.linalg.norm(v)]


def near(a: list[float], weight: float, seed: str = "noise") -> list[float]:
    """A unit vector whose cosine to `a` falls as `weight` grows."""
    v = (1 - weight) * np.asarray(a) + weight * np.asarray(unit(seed))
    return [float(x) for x in v / np.linalg.norm(v)]


QUESTION = "how often should I oil my bike chain"
Q = unit(QUESTION)


def answer(
    question: str = QUESTION,
    body: bytes = b"every 500 km",
    *,
    tenant: str = "t1",
    scope: str = "model-a",
    dense: list[float] | None = None,
    at_ms: int = NOW_MS,
) -> AnswerRecord:
    return AnswerRecord(
        tenant=tenant,
        scope=scope,
        question=question,
        answer=body,
        dense=dense if dense is not None else unit(question),
        stored_at_ms=at_ms,
    )


def lookup(
    dense: list[float] = Q,
    *,
    tenant: str = "t1",
    scope: str = "model-a",
    min_score: float = 0.95,
    after_ms: int = 0,
) -> AnswerLookup:
    return AnswerLookup(
        tenant=tenant, scope=scope, dense=dense, min_score=min_score, stored_after_ms=after_ms
    )


@pytest.fixture(params=["edge", "server"])
def answers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[EdgeStore | QdrantServerStore]:
    s: EdgeStore | QdrantServerStore
    if request.param == "edge":
        s = EdgeStore(tmp_path / "answers", dim=DIM)
    else:
        s = QdrantServerStore(QdrantClient(location=":memory:"), "answers", dim=DIM)
    yield s
    s.close()


def test_a_paraphrase_hits_and_returns_the_stored_answer(answers: AnswerStore) -> None:
    body = bytes(range(256))  # opaque bytes come back untouched
    answers.put_answer(answer(body=body))
    paraphrase = near(Q, 0.1)
    assert float(np.dot(paraphrase, Q)) > 0.97
    found = answers.find_answer(lookup(paraphrase))
    assert found is not None
    assert found.answer == body
    assert found.question == QUESTION
    assert found.stored_at_ms == NOW_MS
    assert 0.97 < found.score <= 1.0 + 1e-6


def test_below_the_threshold_misses(answers: AnswerStore) -> None:
    answers.put_answer(answer())
    assert answers.find_answer(lookup(unit("what is the capital of France"))) is None
    loose = near(Q, 0.5)
    score = float(np.dot(loose, Q))
    assert answers.find_answer(lookup(loose, min_score=score + 0.01)) is None
    found = answers.find_answer(lookup(loose, min_score=score - 0.01))
    assert found is not None and found.score == pytest.approx(score, abs=1e-4)


def test_the_best_match_wins(answers: AnswerStore) -> None:
    answers.put_answer(answer("close", b"close", dense=near(Q, 0.05, "a")))
    answers.put_answer(answer("closer", b"closer", dense=near(Q, 0.01, "b")))
    found = answers.find_answer(lookup(min_score=0.9))
    assert found is not None and found.answer == b"closer"


def test_other_tenants_and_scopes_never_hit(answers: AnswerStore) -> None:
    answers.put_answer(answer())
    assert answers.find_answer(lookup(tenant="t2")) is None
    assert answers.find_answer(lookup(scope="model-b")) is None
    assert answers.find_answer(lookup(scope="")) is None
    assert answers.find_answer(lookup()) is not None


def test_one_entry_per_tenant_scope_and_question(answers: AnswerStore) -> None:
    answers.put_answer(answer(body=b"old", at_ms=NOW_MS - 5000))
    answers.put_answer(answer(body=b"new"))
    assert answers.count_answers() == 1
    found = answers.find_answer(lookup())
    assert found is not None and (found.answer, found.stored_at_ms) == (b"new", NOW_MS)
    # the same question in another scope or tenant is another entry
    answers.put_answer(answer(body=b"b", scope="model-b"))
    answers.put_answer(answer(body=b"t2", tenant="t2"))
    assert answers.count_answers() == 3
    found = answers.find_answer(lookup(scope="model-b"))
    assert found is not None and found.answer == b"b"


def test_max_age_ignores_older_answers(answers: AnswerStore) -> None:
    answers.put_answer(answer(at_ms=NOW_MS - 60_000))
    assert answers.find_answer(lookup(after_ms=NOW_MS - 30_000)) is None
    assert answers.find_answer(lookup(after_ms=NOW_MS - 60_000)) is not None
    assert answers.find_answer(lookup(after_ms=0)) is not None


def test_expire_removes_only_old_answers(answers: AnswerStore) -> None:
    answers.put_answer(answer("old", at_ms=NOW_MS - 10_000, tenant="a"))
    answers.put_answer(answer("older", at_ms=NOW_MS - 20_000, tenant="b"))
    answers.put_answer(answer("fresh", at_ms=NOW_MS))
    assert answers.expire_answers(NOW_MS - 5_000) == 2
    assert answers.count_answers() == 1
    assert answers.expire_answers(NOW_MS - 5_000) == 0
    answers.optimize()
    assert answers.find_answer(lookup(unit("fresh"))) is not None


def test_invalid_answers_and_lookups_raise_value_error(answers: AnswerStore) -> None:
    with pytest.raises(ValueError, match="question"):
        answers.put_answer(answer(""))
    with pytest.raises(ValueError, match="dims"):
        answers.put_answer(answer(dense=[1.0, 0.0]))
    with pytest.raises(ValueError, match="dims"):
        answers.find_answer(lookup([1.0, 0.0]))
    with pytest.raises(ValueError, match="min_score"):
        answers.find_answer(lookup(min_score=1.5))


def test_answers_never_reach_document_search_or_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The factory puts answers apart from documents, and the kind filter guards besides."""
    monkeypatch.setattr(factory, "QdrantClient", lambda url, api_key: QdrantClient(":memory:"))
    for url in (None, "http://qdrant:6333"):
        docs, cache = open_store(tmp_path, url), open_answer_store(tmp_path, url)
        try:
            cache.put_answer(answer())
            assert isinstance(docs, EdgeStore | QdrantServerStore)
            docs.put_answer(answer("in the wrong store"))  # even a misuse stays invisible
            assert docs.count("t1") == 0
            for mode in ("dense", "sparse", "hybrid"):
                found = docs.search(
                    SearchQuery(tenant="t1", text=QUESTION, dense=Q, top_k=50, mode=mode)
                )
                assert found == []
            assert cache.find_answer(lookup()) is not None
        finally:
            docs.close()
            cache.close()
    assert (tmp_path / factory.ANSWERS_DIR / "edge_config.json").exists()


def test_edge_answers_survive_close_and_reopen(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "answers", dim=DIM)
    store.put_answer(answer())
    store.close()
    reopened = EdgeStore(tmp_path / "answers", dim=DIM)
    try:
        assert reopened.find_answer(lookup()) is not None
    finally:
        reopened.close()


def test_expiry_sweeps_past_the_ttl_only(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "answers", dim=DIM)
    try:
        store.put_answer(answer("old", at_ms=NOW_MS - 100_000))
        store.put_answer(answer("new", at_ms=NOW_MS - 1_000))
        now = NOW_MS / 1000
        assert AnswerExpiry(lambda: store, ttl_s=0, every_s=1, clock=lambda: now).sweep() == 0
        assert AnswerExpiry(lambda: store, ttl_s=50, every_s=1, clock=lambda: now).sweep() == 1
        assert store.count_answers() == 1
    finally:
        store.close()


def test_query_vectors_is_a_bounded_lru() -> None:
    cache = QueryVectors(2)
    cache.put("a", [1.0])
    cache.put("b", [2.0])
    assert cache.get("a") == [1.0]  # a is now the most recent
    cache.put("c", [3.0])
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c"), len(cache)) == ([1.0], [3.0], 2)
    off = QueryVectors(0)
    off.put("a", [1.0])
    assert off.get("a") is None


# --- the gRPC handlers, with a fake embedding service and a real Edge store -----------


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise Aborted(code, details)


class Embedder:
    """Embeds text as its hash-seeded unit vector; `aliases` maps a paraphrase to its original.

    Stands in for the embedding service's stub so that a paraphrase's score is chosen
    here; the real model and service: test_query_embedding.py (down included)."""

    def __init__(self, aliases: dict[str, list[float]] | None = None) -> None:
        self.calls: list[str] = []
        self.aliases = aliases or {}

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, **_: object
    ) -> embedding_pb2.EmbedResponse:
        self.calls.extend(request.texts)
        vectors = [self.aliases.get(t) or unit(t) for t in request.texts]
        return embedding_pb2.EmbedResponse(
            vectors=[embedding_pb2.Vector(values=v) for v in vectors]
        )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[RetrievalServicer, Embedder, list[float]]]:
    docs, cache = EdgeStore(tmp_path / "qdrant", DIM), EdgeStore(tmp_path / "answers", DIM)
    stores: Loaded[VectorStore] = Loaded("docs")
    stores.set(docs)
    answer_box: Loaded[AnswerStore] = Loaded("answers")
    answer_box.set(cache)
    embedder = Embedder({"how frequently do I need to lube my bicycle chain": near(Q, 0.1)})
    now = [NOW_MS / 1000]
    settings = RetrievalSettings(answer_cache_ttl_s=3600)
    stub: Any = embedder
    servicer = RetrievalServicer(
        stores, RemoteQueryEmbedder(lambda: stub), settings, answer_box, lambda: now[0]
    )
    yield servicer, embedder, now
    docs.close()
    cache.close()


async def test_lookup_search_and_store_embed_the_question_once(
    service: tuple[RetrievalServicer, Embedder, list[float]],
) -> None:
    servicer, embedder, _ = service
    ctx: Any = Context()
    miss = await servicer.LookupAnswer(
        retrieval_pb2.LookupAnswerRequest(tenant="t", scope="s", question=f" {QUESTION} "), ctx
    )
    assert not miss.hit
    await servicer.Search(retrieval_pb2.SearchRequest(tenant="t", query=QUESTION), ctx)
    await servicer.StoreAnswer(
        retrieval_pb2.StoreAnswerRequest(tenant="t", scope="s", question=QUESTION, answer=b"A"),
        ctx,
    )
    assert embedder.calls == [QUESTION]
    hit = await servicer.LookupAnswer(
        retrieval_pb2.LookupAnswerRequest(
            tenant="t", scope="s", question="how frequently do I need to lube my bicycle chain"
        ),
        ctx,
    )
    assert (hit.hit, hit.answer, hit.question) == (True, b"A", QUESTION)
    assert hit.score > 0.95
    searched = await servicer.Search(retrieval_pb2.SearchRequest(tenant="t", query=QUESTION), ctx)
    assert list(searched.hits) == []


async def test_max_age_and_ttl_apply_on_read(
    service: tuple[RetrievalServicer, Embedder, list[float]],
) -> None:
    servicer, _, now = service
    ctx: Any = Context()
    store = retrieval_pb2.StoreAnswerRequest(question=QUESTION, answer=b"A")
    await servicer.StoreAnswer(store, ctx)
    now[0] += 120
    ask = retrieval_pb2.LookupAnswerRequest(question=QUESTION)
    assert (await servicer.LookupAnswer(ask, ctx)).hit  # no max age, within the TTL
    ask.max_age_s = 60
    assert not (await servicer.LookupAnswer(ask, ctx)).hit
    ask.max_age_s = 600
    assert (await servicer.LookupAnswer(ask, ctx)).hit
    now[0] += 3600  # past the one-hour TTL, before any sweep removed it
    ask.max_age_s = 0
    assert not (await servicer.LookupAnswer(ask, ctx)).hit


@pytest.mark.parametrize(
    ("rpc", "request_", "message"),
    [
        ("LookupAnswer", retrieval_pb2.LookupAnswerRequest(question="  "), "question is empty"),
        ("StoreAnswer", retrieval_pb2.StoreAnswerRequest(answer=b"x"), "question is empty"),
        ("StoreAnswer", retrieval_pb2.StoreAnswerRequest(question="q"), "answer is empty"),
        (
            "LookupAnswer",
            retrieval_pb2.LookupAnswerRequest(question="q", min_score=1.5),
            "min_score must be between 0 and 1",
        ),
        (
            "LookupAnswer",
            retrieval_pb2.LookupAnswerRequest(question="q", max_age_s=-1),
            "max_age_s must be >= 0",
        ),
    ],
)
async def test_invalid_requests_are_refused(
    service: tuple[RetrievalServicer, Embedder, list[float]],
    rpc: str,
    request_: Any,
    message: str,
) -> None:
    servicer, embedder, _ = service
    with pytest.raises(Aborted) as refused:
        await getattr(servicer, rpc)(request_, Context())
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details
    assert embedder.calls == []
