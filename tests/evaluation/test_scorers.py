"""ServiceScorer against the real embedding and guardrails services, each its own process.

The `evaluation` policy is stored for the baseline tenant (`default`), as the evaluation
service seeds it, so every other tenant's check resolves to it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from nats.js import JetStreamContext

from llmops.evaluation.scorers import EMBED_BATCH, ServiceScorer
from llmops.guardrails.policy import parse_policy
from llmops.guardrails.store import PolicyStore
from llmops.v1 import embedding_pb2_grpc, guardrails_pb2, guardrails_pb2_grpc
from tests.support import ServiceProcess

EVALUATION_POLICY = """
tenant: default
name: evaluation
description: online scoring, nothing blocks
time_budget_ms: 5000  # off the request path, as the shipped policy: a busy machine is no miss
output:
  groundedness: {action: flag, min_support: 0.5, threshold: 0.5}
  toxicity: {action: flag, threshold: 0.5}
"""
# Every sentence of the answers below has four words or more, so every one is checked.
PASSAGES = [
    "The Aurora AX-9 heat pump runs a defrost cycle of two to six minutes when the coil "
    "temperature drops below minus three degrees.",
    "Error code E-417 means the flow sensor reads less than six litres per minute.",
]
QUESTION = "How long does a defrost cycle of the Aurora heat pump last?"
GROUNDED = "The heat pump runs a defrost cycle of two to six minutes."
INVENTED = "The defrost cycle lasts 45 minutes and starts every 12 hours."
HALF = f"{GROUNDED} It was designed in 1987 by a team of 40 engineers in Oslo."


async def _start(service: ServiceProcess) -> ServiceProcess:
    service.start()
    await service.wait_healthy(timeout_s=120)
    return service


@pytest.fixture(scope="module")
async def services(
    nats_url: str, js: JetStreamContext, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ServiceProcess, ServiceProcess]]:
    data = tmp_path_factory.mktemp("scorers")
    started = await asyncio.gather(
        _start(ServiceProcess("embedding", nats_url, data / "embedding")),
        _start(ServiceProcess("guardrails", nats_url, data / "guardrails")),
    )
    yield started[0], started[1]
    for service in started:
        service.stop()
        await service.close()


@pytest.fixture(scope="module")
async def store(js: JetStreamContext) -> PolicyStore:
    return await PolicyStore.open(js)


async def _live(stub: guardrails_pb2_grpc.GuardrailsStub, store: PolicyStore, text: str) -> str:
    """Store a policy and wait until the service checks with it; its name."""
    stored = await store.put(parse_policy(text), "test")
    deadline = time.monotonic() + 10
    while True:
        request = guardrails_pb2.CheckRequest(
            tenant=stored.tenant,
            policy=stored.name,
            direction=guardrails_pb2.DIRECTION_OUTPUT,
            text="hello there",
        )
        try:
            reply = await stub.Check(request, timeout=10)
            if reply.policy_version == stored.version:
                return stored.name
        except grpc.aio.AioRpcError as exc:  # a new policy: NOT_FOUND until the mirror has it
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        assert time.monotonic() < deadline, "the guardrails service never saw the policy"
        await asyncio.sleep(0.02)


Stubs = tuple[embedding_pb2_grpc.EmbeddingStub, guardrails_pb2_grpc.GuardrailsStub]


@pytest.fixture(scope="module")
async def stubs(services: tuple[ServiceProcess, ServiceProcess], store: PolicyStore) -> Stubs:
    """The two services' stubs, once the `evaluation` policy is live."""
    embedding, guardrails = services
    stub = guardrails_pb2_grpc.GuardrailsStub(guardrails.channel)
    await _live(stub, store, EVALUATION_POLICY)
    return embedding_pb2_grpc.EmbeddingStub(embedding.channel), stub


@pytest.fixture(scope="module")
def scorer(stubs: Stubs) -> ServiceScorer:
    return ServiceScorer(*stubs)


async def test_embeddings_are_unit_rows_in_batches_the_service_accepts(
    scorer: ServiceScorer,
) -> None:
    last = ["The cat sat on the mat.", "Quarterly revenue grew 12%.", "Oil the bicycle chain."]
    texts = [f"Question number {i} about heat pumps" for i in range(EMBED_BATCH + 41)] + last
    vectors = await scorer.embed(texts)  # more than the service takes in one Embed call
    assert vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # order kept across the calls: each of the last three is its own nearest neighbour
    # (int8 activations are quantised per batch, so vectors differ in the third digit)
    again = await scorer.embed(last)
    similarity = again @ vectors[-3:].T
    assert (similarity.argmax(axis=1) == [0, 1, 2]).all() and similarity.diagonal().min() > 0.98
    assert (await scorer.embed([])).shape[0] == 0


async def test_similarity_ranks_a_paraphrase_above_an_unrelated_answer(
    scorer: ServiceScorer,
) -> None:
    reference = "A defrost cycle takes two to six minutes."
    assert await scorer.similarity(reference, reference) == pytest.approx(1.0, abs=1e-5)
    paraphrase = await scorer.similarity("Defrosting lasts between two and six minutes.", reference)
    unrelated = await scorer.similarity("Submit travel receipts within thirty days.", reference)
    assert 0.6 < paraphrase <= 1.0
    assert 0.0 <= unrelated < paraphrase - 0.3


async def test_reference_free_scores_a_grounded_relevant_answer(scorer: ServiceScorer) -> None:
    scores = await scorer.reference_free("acme", QUESTION, GROUNDED, PASSAGES)
    assert set(scores) == {"answer_relevance", "groundedness", "refusal"}
    assert scores["groundedness"] == 1.0  # every (checked) character supported
    assert scores["refusal"] == 0.0
    off_topic = await scorer.reference_free(
        "acme", QUESTION, "Submit travel receipts within thirty days of the trip.", PASSAGES
    )
    assert scores["answer_relevance"] > 0.5 > off_topic["answer_relevance"]


async def test_groundedness_is_the_share_of_the_answer_supported(scorer: ServiceScorer) -> None:
    invented = await scorer.reference_free("acme", QUESTION, INVENTED, PASSAGES)
    assert invented["groundedness"] == 0.0  # its numbers are in no passage
    half = await scorer.reference_free("acme", QUESTION, HALF, PASSAGES)
    # the invented second sentence is unsupported: its share of the answer's characters
    second = len(HALF) - len(GROUNDED) - 1
    assert half["groundedness"] == pytest.approx(1 - second / (len(HALF) - 1), abs=0.02)


async def test_a_refusal_without_passages_has_no_groundedness(scorer: ServiceScorer) -> None:
    scores = await scorer.reference_free("acme", QUESTION, "I don't know.", [])
    assert set(scores) == {"answer_relevance", "refusal"}
    assert scores["refusal"] == 1.0
    empty = await scorer.reference_free("acme", QUESTION, "", PASSAGES)  # nothing to check
    assert set(empty) == {"answer_relevance", "refusal"} and empty["refusal"] == 1.0
    assert set(await scorer.reference_free("acme", QUESTION, GROUNDED, ["  "])) == {
        "answer_relevance",
        "refusal",
    }


async def test_groundedness_is_left_out_when_unscanned_or_not_in_the_policy(
    stubs: Stubs, store: PolicyStore
) -> None:
    guardrails = stubs[1]
    hurried = await _live(
        guardrails,
        store,
        EVALUATION_POLICY.replace("evaluation", "hurried") + "time_budget_ms: 0.001\n",
    )
    no_rule = await _live(
        guardrails, store, "tenant: default\nname: plain\noutput:\n  toxicity: {action: flag}\n"
    )
    long_answer = " ".join(
        f"Sentence {i} paraphrases a defrost cycle lasting minutes." for i in range(30)
    )
    for policy in (hurried, no_rule):
        scorer = ServiceScorer(*stubs, policy=policy)
        scores = await scorer.reference_free("acme", QUESTION, long_answer, PASSAGES)
        assert set(scores) == {"answer_relevance", "refusal"}, policy


async def test_an_unknown_policy_is_an_error_not_a_score(stubs: Stubs) -> None:
    missing = ServiceScorer(*stubs, policy="nonexistent")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await missing.reference_free("acme", QUESTION, GROUNDED, PASSAGES)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
