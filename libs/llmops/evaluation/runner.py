"""Offline evaluation runs: every dataset item through the real chat path, then scored.

Items go through the gateway's `ChatOnce` with the caller's key, so a run sees
exactly what production sees (auth, guardrails, retrieval, the prompt registry,
inference routing, pricing) and its results can be trusted to predict it. Each
(item, metric) becomes an EvaluationEvent and the run itself an EvalRunEvent
(at start and at end); both are published with JetStream acks awaited, so a run
that says "finished" has every result on the bus. An item whose request fails
(a model that is down) is recorded as failed with the reason; the run carries
on and says how many failed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js import JetStreamContext

from llmops.bus.topology import EVAL_RUN_EVENTS, EVALUATION_EVENTS
from llmops.evaluation.datasets import Dataset, DatasetItem
from llmops.evaluation.judge import Judge
from llmops.evaluation.metrics import BINARY_METRICS, reference_scores
from llmops.v1 import (
    events_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inference_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

REQUEST_TIMEOUT_S = 120.0
ERROR_EVALUATOR = "error"
JUDGE_EVALUATOR = "judge"
# Measured per item beside the scores; lower is better (compare reads this).
COST_METRICS = ("latency_ms", "input_tokens", "output_tokens", "cost")
_MODES = {
    "hybrid": gateway_pb2.SEARCH_MODE_OPTION_HYBRID,
    "dense": gateway_pb2.SEARCH_MODE_OPTION_DENSE,
    "sparse": gateway_pb2.SEARCH_MODE_OPTION_SPARSE,
}


class Scorer(Protocol):
    """What scores an answer with the platform's services (llmops.evaluation.scorers)."""

    async def similarity(self, answer: str, reference: str) -> float: ...

    async def reference_free(
        self, tenant: str, question: str, answer: str, passages: list[str]
    ) -> dict[str, float]: ...


@dataclass(frozen=True)
class RunSettings:
    """What a run asks the gateway for: everything here shapes the answers."""

    prompt: str = "default"
    prompt_version: str = ""  # empty: by label
    prompt_label: str = ""  # empty: production
    model: str = ""  # empty: the default alias
    concurrency: int = 4
    top_k: int = 0  # 0: the gateway's default (5)
    mode: str = "hybrid"
    collection: str = ""
    guardrail_policy: str = ""  # empty: the tenant's default
    params: inference_pb2.GenerationParams = field(default_factory=inference_pb2.GenerationParams)

    def request(self, item: DatasetItem, run_id: str) -> gateway_pb2.ChatRequest:
        return gateway_pb2.ChatRequest(
            messages=[inference_pb2.ChatMessage(role="user", content=item.question)],
            collection=self.collection,
            prompt=self.prompt,
            prompt_version=self.prompt_version,
            prompt_label=self.prompt_label,
            variables=item.variables,
            model=self.model,
            params=self.params,
            retrieval=gateway_pb2.RetrievalOptions(top_k=self.top_k, mode=_MODES[self.mode]),
            # A cached answer would measure the cache, not the prompt and model.
            cache=gateway_pb2.CacheOptions(no_exact=True, no_semantic=True),
            guardrail_policy=self.guardrail_policy,
            user=f"eval-{run_id}",  # one A/B arm for the whole run
        )

    def recorded(self) -> dict[str, str]:
        return {
            "prompt_label": self.prompt_label,
            "top_k": str(self.top_k or 5),
            "retrieval_mode": self.mode,
            "collection": self.collection or "*",
            "guardrail_policy": self.guardrail_policy or "default",
            "params": json.dumps(MessageToDict(self.params), sort_keys=True),
            "cache": "bypass",
            "concurrency": str(self.concurrency),
        }


@dataclass
class ItemResult:
    item_id: str
    question: str
    answer: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    error: str = ""  # why the request failed ("" = answered)
    notes: list[str] = field(default_factory=list)  # scorers that gave no score, and why
    cited_docs: list[str] = field(default_factory=list)
    prompt_version: str = ""
    prompt_arm: str = ""
    model_used: str = ""
    currency: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.error)


@dataclass
class RunResult:
    run_id: str
    tenant: str
    key_id: str
    dataset: str
    dataset_version: str
    prompt: str
    prompt_version: str
    model: str
    status: str
    started_at: str
    finished_at: str
    settings: dict[str, str]
    items: list[ItemResult]
    summary: dict[str, float]
    failed_items: int
    reason: str
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    judge_cost_nanos: int = 0
    currency: str = ""

    def scores(self) -> dict[str, dict[str, float]]:
        """metric -> item id -> score, over the answered items (what compare pairs)."""
        out: dict[str, dict[str, float]] = {}
        for item in self.items:
            for metric, score in item.scores.items():
                out.setdefault(metric, {})[item.item_id] = score
        return out


Progress = Callable[[int, int, ItemResult], None]


@dataclass
class Clients:
    """The services a run talks to, and the caller's identity."""

    gateway: gateway_pb2_grpc.GatewayStub
    retrieval: retrieval_pb2_grpc.RetrievalStub
    scorer: Scorer
    js: JetStreamContext
    api_key: str
    tenant: str
    key_id: str
    judge: Judge | None = None

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)


def passed(metric: str, score: float) -> bool:
    """Pass/fail of one score: a binary metric passes at 1 (refusal: at 0), others at 0.5."""
    if metric == "refusal":
        return score < 0.5
    if metric in BINARY_METRICS:
        return score >= 1.0
    return metric in COST_METRICS or score >= 0.5


async def run_eval(
    dataset: Dataset,
    settings: RunSettings,
    clients: Clients,
    progress: Progress | None = None,
) -> RunResult:
    """Run every item of `dataset` (at most `settings.concurrency` at once) and publish it all."""
    run = _start(dataset, settings, clients)
    await _publish_run(clients.js, run)
    try:
        gate = asyncio.Semaphore(max(1, settings.concurrency))
        done = 0

        async def one(item: DatasetItem) -> ItemResult:
            nonlocal done
            async with gate:
                result = await _evaluate(item, dataset, settings, clients, run)
            await _publish_item(clients.js, run, dataset, settings, result)
            done += 1
            if progress is not None:
                progress(done, len(dataset.items), result)
            return result

        run.items = list(await asyncio.gather(*(one(item) for item in dataset.items)))
    except BaseException as exc:
        _finish(run, "failed", f"the run stopped: {type(exc).__name__}: {exc}")
        await asyncio.shield(_publish_run(clients.js, run))
        raise
    _finish(run, "finished", _failure_summary(run.items))
    await _publish_run(clients.js, run)
    return run


def _start(dataset: Dataset, settings: RunSettings, clients: Clients) -> RunResult:
    recorded = settings.recorded()
    if clients.judge is not None:
        recorded["judge_model"] = clients.judge.model
    return RunResult(
        run_id=uuid.uuid4().hex,
        tenant=clients.tenant,
        key_id=clients.key_id,
        dataset=dataset.name,
        dataset_version=dataset.version,
        prompt=settings.prompt,
        prompt_version=settings.prompt_version,
        model=settings.model,
        status="running",
        started_at=dt.datetime.now(dt.UTC).isoformat(),
        finished_at="",
        settings=recorded,
        items=[],
        summary={},
        failed_items=0,
        reason="",
    )


async def _evaluate(
    item: DatasetItem, dataset: Dataset, settings: RunSettings, clients: Clients, run: RunResult
) -> ItemResult:
    result = ItemResult(item.id, item.question)
    began = time.perf_counter()
    try:
        reply = await clients.gateway.ChatOnce(
            settings.request(item, run.run_id), metadata=clients.metadata, timeout=REQUEST_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as exc:
        result.error = f"{exc.code().name}: {exc.details()}"
        return result
    latency_ms = (time.perf_counter() - began) * 1000
    final = reply.final
    result.answer = reply.text
    result.prompt_version = final.prompt_version
    result.prompt_arm = final.prompt_arm
    result.model_used = final.model_used
    result.cited_docs = list(dict.fromkeys(c.doc_id for c in final.citations))
    reference = item.expected_answer
    scores = reference_scores(reply.text, reference, result.cited_docs, item.expected_sources)
    passages: list[str] = []
    try:  # a scorer that fails costs its scores, not the item's answer
        passages = await _passages(clients, [c.chunk_id for c in final.citations])
        service_scores = [
            clients.scorer.reference_free(clients.tenant, item.question, reply.text, passages)
        ]
        if reference:
            service_scores.append(_similarity(clients.scorer, reply.text, reference))
        for extra in await asyncio.gather(*service_scores):
            scores.update(extra)
    except grpc.aio.AioRpcError as exc:
        result.notes.append(f"scorers: {exc.code().name}: {exc.details()}")
    if clients.judge is not None:
        verdict = await clients.judge.score(
            clients.tenant, item.question, reply.text, reference, passages
        )
        run.judge_input_tokens += verdict.input_tokens
        run.judge_output_tokens += verdict.output_tokens
        run.judge_cost_nanos += verdict.cost_nanos
        run.currency = run.currency or verdict.currency
        if verdict.score is None:
            result.notes.append(f"judge: {verdict.reason}")
        else:
            scores[JUDGE_EVALUATOR] = verdict.score
    scores.update(
        latency_ms=latency_ms,
        input_tokens=float(final.usage.input_tokens),
        output_tokens=float(final.usage.output_tokens),
        cost=final.cost.nanos / 1e9,
    )
    result.currency = final.cost.currency
    result.scores = {k: v for k, v in scores.items() if not math.isnan(v)}
    return result


async def _similarity(scorer: Scorer, answer: str, reference: str) -> dict[str, float]:
    return {"similarity": await scorer.similarity(answer, reference)}


async def _passages(clients: Clients, chunk_ids: list[str]) -> list[str]:
    """The cited chunks' text (what groundedness is judged against), in citation order."""
    if not chunk_ids:
        return []
    reply = await clients.retrieval.GetChunks(
        retrieval_pb2.GetChunksRequest(tenant=clients.tenant, chunk_ids=chunk_ids),
        timeout=REQUEST_TIMEOUT_S,
    )
    return [chunk.text for chunk in reply.chunks]


def _finish(run: RunResult, status: str, reason: str) -> None:
    run.status = status
    run.reason = reason
    run.finished_at = dt.datetime.now(dt.UTC).isoformat()
    run.failed_items = sum(1 for item in run.items if item.failed)
    answered = [item for item in run.items if not item.failed]
    versions = sorted({item.prompt_version for item in answered if item.prompt_version})
    if versions:
        run.prompt_version = ",".join(versions)  # several only when a split label served it
    arms = sorted({item.prompt_arm for item in answered if item.prompt_arm})
    if arms:
        run.settings["prompt_arm"] = ",".join(arms)
    models = sorted({item.model_used for item in answered if item.model_used})
    run.settings["model_used"] = ",".join(models)
    run.currency = run.currency or next((i.currency for i in answered if i.currency), "")
    totals: dict[str, list[float]] = {}
    for item in answered:
        for metric, score in item.scores.items():
            totals.setdefault(metric, []).append(score)
    run.summary = {metric: sum(v) / len(v) for metric, v in sorted(totals.items())}


def _failure_summary(items: list[ItemResult]) -> str:
    """`3 of 8 items failed (3 UNAVAILABLE); e.g. UNAVAILABLE: <the first reason>`."""
    failed = [item.error for item in items if item.failed]
    if not failed:
        return ""
    codes = Counter(error.split(":", 1)[0] for error in failed)
    counts = ", ".join(f"{n} {code}" for code, n in codes.most_common())
    return f"{len(failed)} of {len(items)} items failed ({counts}); e.g. {failed[0]}"


def _timestamp(iso: str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt.datetime.fromisoformat(iso))
    return ts


def _event_id(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


async def _publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str) -> None:
    headers = {"Nats-Msg-Id": msg_id, "Content-Type": "application/protobuf"}
    await js.publish(subject, payload, headers=headers)


async def _publish_run(js: JetStreamContext, run: RunResult) -> None:
    event = events_pb2.EvalRunEvent(
        event_id=run.run_id,
        time=_timestamp(run.started_at),
        tenant=run.tenant,
        key_id=run.key_id,
        status=run.status,
        dataset=run.dataset,
        dataset_version=run.dataset_version,
        prompt=run.prompt,
        prompt_version=run.prompt_version,
        model=run.model,
        settings=run.settings,
        items=len(run.items),
        failed_items=run.failed_items,
        summary=run.summary,
        judge_input_tokens=run.judge_input_tokens,
        judge_output_tokens=run.judge_output_tokens,
        judge_cost_nanos=run.judge_cost_nanos,
        currency=run.currency,
        reason=run.reason,
        concurrency=int(run.settings.get("concurrency", "1")),
        evaluations=sum(len({row[0] for row in _rows(item)}) for item in run.items),
    )
    if run.finished_at:
        event.finished_at.CopyFrom(_timestamp(run.finished_at))
    # Start and end share the run id: the message id tells them apart for JetStream's dedup.
    await _publish(js, EVAL_RUN_EVENTS, event.SerializeToString(), f"{run.run_id}:{run.status}")


def _rows(result: ItemResult) -> list[tuple[str, float, bool, str, str]]:
    """(evaluator, score, passed, reason, kind) of each EvaluationEvent an item gets."""
    if result.failed:
        return [(ERROR_EVALUATOR, 0.0, False, result.error, "offline")]
    rows = [
        (m, s, passed(m, s), "", "judge" if m == JUDGE_EVALUATOR else "offline")
        for m, s in result.scores.items()
    ]
    return rows + [
        (f"{note.split(':')[0]}_unscored", 0.0, False, note, "judge") for note in result.notes
    ]


async def _publish_item(
    js: JetStreamContext,
    run: RunResult,
    dataset: Dataset,
    settings: RunSettings,
    result: ItemResult,
) -> None:
    now = Timestamp()
    now.GetCurrentTime()
    common = {
        "time": now,
        "tenant": run.tenant,
        "run_id": run.run_id,
        "item_id": result.item_id,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "prompt": settings.prompt,
        "prompt_version": result.prompt_version or settings.prompt_version,
        "prompt_label": settings.prompt_label,
        "prompt_arm": result.prompt_arm,
        "model": result.model_used or settings.model,
    }
    await asyncio.gather(
        *(
            _publish(
                js,
                EVALUATION_EVENTS,
                events_pb2.EvaluationEvent(
                    event_id=(event_id := _event_id(run.run_id, result.item_id, evaluator)),
                    evaluator=evaluator,
                    score=score,
                    passed=ok,
                    reason=reason,
                    kind=kind,
                    **common,  # type: ignore[arg-type]
                ).SerializeToString(),
                event_id,
            )
            for evaluator, score, ok, reason, kind in _rows(result)
        )
    )
