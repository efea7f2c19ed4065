"""Scorers that need the platform's services: embeddings and the guardrails' groundedness.

One implementation for both sides: the evaluation service scores sampled production
interactions with `reference_free`, the offline runner adds `similarity` to the reference.
No LLM judge runs here, so each metric is the cheap, deterministic one:

- answer_relevance: cosine of the question's and the answer's embeddings. Ragas instead has
  an LLM write questions the answer would fit and compares those with the real question;
  that needs a generator model per item, which offline evaluation here does without.
- groundedness: the guardrails' groundedness scanner, whose score is the share of the
  answer's checked characters (sentences of four words or more) that no passage supports;
  the metric is its complement, the share supported. It is left out when there are no
  passages (nothing to rest on), the answer is empty, or the scanner did not run (time
  budget, error, no groundedness rule in the policy), never guessed.
- refusal: `metrics.is_refusal`, 1.0 or 0.0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from llmops.evaluation.metrics import cosine, is_refusal
from llmops.v1 import embedding_pb2, embedding_pb2_grpc, guardrails_pb2, guardrails_pb2_grpc

EVALUATION_POLICY = "evaluation"
GROUNDEDNESS = "groundedness"
EMBED_BATCH = 256  # the embedding service's default limit of texts per Embed call


class ServiceScorer:
    """Scores answers through the embedding and guardrails services (gRPC errors propagate:
    the caller decides whether an item failed or a sample is skipped)."""

    def __init__(
        self,
        embedding: embedding_pb2_grpc.EmbeddingStub,
        guardrails: guardrails_pb2_grpc.GuardrailsStub,
        *,
        policy: str = EVALUATION_POLICY,
        timeout_s: float = 10.0,
    ) -> None:
        self._embedding = embedding
        self._guardrails = guardrails
        self.policy = policy
        self.timeout_s = timeout_s

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The texts' embeddings, one row each, L2-normalised; one Embed call per
        EMBED_BATCH texts (one call for what a single item needs)."""
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        batches = [list(texts[i : i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)]
        replies = await asyncio.gather(
            *(
                self._embedding.Embed(embedding_pb2.EmbedRequest(texts=b), timeout=self.timeout_s)
                for b in batches
            )
        )
        rows = [list(v.values) for reply in replies for v in reply.vectors]
        if len(rows) != len(texts):
            raise RuntimeError(f"embedding returned {len(rows)} vectors for {len(texts)} texts")
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: npt.NDArray[np.float32] = vectors / np.where(norms == 0, 1, norms)
        return unit

    async def similarity(self, answer: str, reference: str) -> float:
        """Cosine of the answer's and the reference's embeddings, clipped to [0, 1]."""
        vectors = await self.embed([answer, reference])
        return cosine(vectors[0].tolist(), vectors[1].tolist())

    async def reference_free(
        self, tenant: str, question: str, answer: str, passages: Sequence[str]
    ) -> dict[str, float]:
        """answer_relevance, groundedness (when it can be judged) and refusal: see the module
        docstring. The embedding and the guardrail check run concurrently."""
        relevance = asyncio.ensure_future(self.embed([question, answer]))
        grounded: float | None = None
        try:
            if answer.strip() and any(p.strip() for p in passages):
                grounded = await self.groundedness(tenant, answer, passages)
            vectors = await relevance
        finally:
            relevance.cancel()  # a failed check must not leave the embed call running
        scores = {"answer_relevance": cosine(vectors[0].tolist(), vectors[1].tolist())}
        if grounded is not None:
            scores["groundedness"] = grounded
        scores["refusal"] = float(is_refusal(answer))
        return scores

    async def groundedness(self, tenant: str, answer: str, passages: Sequence[str]) -> float | None:
        """The share of the answer the passages support, by the tenant's `policy`; None when
        the policy has no groundedness rule on output or it did not run."""
        request = guardrails_pb2.CheckRequest(
            tenant=tenant,
            policy=self.policy,
            direction=guardrails_pb2.DIRECTION_OUTPUT,
            text=answer,
            passages=list(passages),
        )
        reply: guardrails_pb2.CheckResponse = await self._guardrails.Check(
            request, timeout=self.timeout_s
        )
        for verdict in reply.verdicts:
            if verdict.scanner == GROUNDEDNESS and not verdict.unscanned:
                return min(1.0, max(0.0, 1.0 - verdict.score))
        return None
