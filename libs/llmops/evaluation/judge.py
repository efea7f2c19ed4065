"""LLM-as-judge: an optional scorer that asks a model to grade an answer against the reference.

Off by default (no judge model runs here; the reference metrics need none). The
rubric is a registry prompt (`eval-judge`, variables {reference} and {answer}),
so it is versioned and labelled like any other prompt; the judge model is any
inference route. The judge's own tokens and cost are counted against the run:
a judge that costs more than the system it grades is worth knowing about.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

import grpc

from llmops.pricebook import PriceBook
from llmops.prompts.mirror import PromptMirror
from llmops.prompts.model import PromptError, PromptNotFound
from llmops.v1 import inference_pb2, inference_pb2_grpc

JUDGE_PROMPT = "eval-judge"
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Verdict:
    score: float | None  # the grade / 5; None: the judge gave no usable grade
    reason: str  # the judge's own words, or why there is no score
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    currency: str = ""


def parse_grade(text: str) -> float | None:
    """The first number of the reply as a 1-5 grade, scaled to [0, 1]; None if it is not one."""
    found = _NUMBER.search(text)
    if found is None:
        return None
    grade = float(found.group())
    return grade / 5 if 1 <= grade <= 5 else None


class Judge:
    """Grades answers with `model` (an inference alias) and the registry's rubric."""

    def __init__(
        self,
        inference: inference_pb2_grpc.InferenceStub,
        prompts: PromptMirror,
        prices: PriceBook,
        model: str,
        label: str = "",
    ) -> None:
        self._inference = inference
        self._prompts = prompts
        self._prices = prices
        self.model = model
        self._label = label

    async def score(
        self, tenant: str, question: str, answer: str, reference: str, passages: list[str]
    ) -> Verdict:
        try:
            rubric = self._prompts.resolve(tenant, JUDGE_PROMPT, label=self._label).prompt
            context = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
            system, user = rubric.render(
                {"reference": reference or "(none)", "answer": answer},
                question=question,
                context=context or "(no passages)",
            )
        except (PromptNotFound, PromptError) as exc:
            return Verdict(None, f"no rubric: {exc}")
        messages = [inference_pb2.ChatMessage(role="user", content=user)]
        if system:
            messages.insert(0, inference_pb2.ChatMessage(role="system", content=system))
        request = inference_pb2.GenerateRequest(
            model=self.model,
            prompt=user,
            tenant=tenant,
            request_id=f"eval-judge-{uuid.uuid4().hex[:12]}",
            messages=messages,
            params=rubric.params.apply_to(inference_pb2.GenerationParams()),
        )
        pieces: list[str] = []
        final = inference_pb2.Final()
        try:
            async for response in self._inference.Generate(request, timeout=_TIMEOUT_S):
                if response.HasField("final"):
                    final = response.final
                else:
                    pieces.append(response.delta.text)
        except grpc.aio.AioRpcError as exc:
            return Verdict(None, f"judge model failed: {exc.code().name}: {exc.details()}")
        text = "".join(pieces).strip()
        cost = self._prices.cost(final.model_used, dt.datetime.now(dt.UTC), final.usage)
        grade = parse_grade(text)
        return Verdict(
            grade,
            text if grade is not None else f"no grade 1-5 in the judge's reply {text[:200]!r}",
            final.usage.input_tokens,
            final.usage.output_tokens,
            cost.nanos,
            cost.currency,
        )
