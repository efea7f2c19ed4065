"""End to end: the semantic answer cache over gRPC, with the real embedding model.

all-MiniLM-L6-v2 puts a close rewording of a question at ~0.96-0.99 cosine, but a
different question about the same thing ("clean" instead of "oil") at ~0.79, which is
why the default threshold is as high as 0.95. Each test uses its own tenant.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from llmops.docclient import DocumentClient
from llmops.v1 import documents_pb2, events_pb2, retrieval_pb2, retrieval_pb2_grpc

QUESTION = "How often should I oil my bike chain?"
REWORDED = "how often should i oil my bike chain"
PARAPHRASE = "How often should you oil a bike chain?"
SAME_TOPIC = "How often should I clean my bike chain?"
UNRELATED = "What is the capital of France?"
SCOPE = "alias=default;prompt=v1"
ANSWER = b'{"text": "Every 500 kilometres.", "citations": [1]}'


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def store(
    stub: retrieval_pb2_grpc.RetrievalStub,
    t: str,
    question: str = QUESTION,
    answer: bytes = ANSWER,
    scope: str = SCOPE,
) -> None:
    request = retrieval_pb2.StoreAnswerRequest(
        tenant=t, scope=scope, question=question, answer=answer
    )
    await stub.StoreAnswer(request, timeout=30)


async def lookup(
    stub: retrieval_pb2_grpc.RetrievalStub,
    t: str,
    question: str,
    scope: str = SCOPE,
    min_score: float = 0.0,
    max_age_s: int = 0,
) -> retrieval_pb2.LookupAnswerResponse:
    request = retrieval_pb2.LookupAnswerRequest(
        tenant=t, scope=scope, question=question, min_score=min_score, max_age_s=max_age_s
    )
    reply: retrieval_pb2.LookupAnswerResponse = await stub.LookupAnswer(request, timeout=30)
    return reply


async def test_a_reworded_question_hits_and_others_miss(
    retrieval: retrieval_pb2_grpc.RetrievalStub,
) -> None:
    t = tenant()
    assert not (await lookup(retrieval, t, QUESTION)).hit
    await store(retrieval, t)
    exact = await lookup(retrieval, t, QUESTION)
    assert (exact.hit, exact.answer, exact.question) == (True, ANSWER, QUESTION)
    assert exact.score == pytest.approx(1.0, abs=1e-3)
    reworded = await lookup(retrieval, t, REWORDED)  # the default threshold, 0.95
    assert reworded.hit and reworded.answer == ANSWER and 0.95 <= reworded.score < 1.0
    paraphrase = await lookup(retrieval, t, PARAPHRASE, min_score=0.9)
    assert paraphrase.hit and paraphrase.answer == ANSWER
    assert not (await lookup(retrieval, t, SAME_TOPIC)).hit
    unrelated = await lookup(retrieval, t, UNRELATED, min_score=0.5)
    assert unrelated == retrieval_pb2.LookupAnswerResponse(hit=False)


async def test_other_tenants_and_scopes_miss(retrieval: retrieval_pb2_grpc.RetrievalStub) -> None:
    t = tenant()
    await store(retrieval, t)
    assert not (await lookup(retrieval, tenant(), QUESTION)).hit
    assert not (await lookup(retrieval, t, QUESTION, scope="alias=other;prompt=v1")).hit
    assert not (await lookup(retrieval, t, QUESTION, scope="")).hit
    assert (await lookup(retrieval, t, QUESTION)).hit


async def test_search_never_returns_cached_answers(
    docs: DocumentClient, retrieval: retrieval_pb2_grpc.RetrievalStub
) -> None:
    t = tenant()
    text = b"Oil the bike chain every 500 kilometres, or after riding in the rain."
    await docs.publish(
        documents_pb2.Document(tenant=t, doc_id="chain", source="chain.txt", content=text)
    )
    outcome = await docs.wait_for([(t, "chain")], 120)
    assert outcome[(t, "chain")].status == events_pb2.DOCUMENT_STATUS_INDEXED
    await store(retrieval, t, scope="")
    await store(retrieval, t)
    for mode in (
        retrieval_pb2.SEARCH_MODE_HYBRID,
        retrieval_pb2.SEARCH_MODE_DENSE,
        retrieval_pb2.SEARCH_MODE_SPARSE,
    ):
        reply = await retrieval.Search(
            retrieval_pb2.SearchRequest(tenant=t, query=QUESTION, top_k=50, mode=mode), timeout=30
        )
        assert [(h.doc_id, h.text) for h in reply.hits] == [("chain", text.decode())]


async def test_max_age_is_respected(retrieval: retrieval_pb2_grpc.RetrievalStub) -> None:
    t = tenant()
    await store(retrieval, t)
    await asyncio.sleep(2.1)
    assert not (await lookup(retrieval, t, QUESTION, max_age_s=1)).hit
    assert (await lookup(retrieval, t, QUESTION, max_age_s=60)).hit


async def test_storing_the_same_question_again_overwrites(
    retrieval: retrieval_pb2_grpc.RetrievalStub,
) -> None:
    t = tenant()
    await store(retrieval, t, answer=b"first")
    await store(retrieval, t, answer=b"second")
    await store(retrieval, t, question=f"  {QUESTION}  ", answer=b"third")  # same once stripped
    reply = await lookup(retrieval, t, QUESTION)
    assert (reply.hit, reply.answer) == (True, b"third")
    await asyncio.sleep(1.1)
    await store(retrieval, t, answer=b"fourth")  # the new store time counts for max_age
    reply = await lookup(retrieval, t, QUESTION, max_age_s=1)
    assert (reply.hit, reply.answer) == (True, b"fourth")


@pytest.mark.parametrize(
    "request_",
    [
        retrieval_pb2.LookupAnswerRequest(question="   "),
        retrieval_pb2.StoreAnswerRequest(question="", answer=b"x"),
    ],
)
async def test_an_empty_question_is_refused(
    retrieval: retrieval_pb2_grpc.RetrievalStub,
    request_: retrieval_pb2.LookupAnswerRequest | retrieval_pb2.StoreAnswerRequest,
) -> None:
    call = (
        retrieval.LookupAnswer
        if isinstance(request_, retrieval_pb2.LookupAnswerRequest)
        else retrieval.StoreAnswer
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(request_, timeout=10)  # type: ignore[operator]
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "question is empty" in (refused.value.details() or "")
