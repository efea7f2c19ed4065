"""The chat pipeline both APIs run: limits → caches → retrieval → prompt → inference → reply,
with the tenant's guardrail policy on the question (beside caches and retrieval), on the
retrieved passages and on the answer as it streams.

`ChatPipeline.run` is an async generator of Delta messages and one closing
ChatFinal; failures raise GatewayError. Whatever happens (answer, error,
cancel) exactly one InteractionEvent is emitted when it ends. Each upstream
call gets the time left before the request's deadline, and the caller going
away cancels the generator, which cancels the upstream calls with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from gateway.budgets import BudgetGuard
from gateway.caches import ExactCache, request_digest, semantic_scope
from gateway.errors import GatewayError, from_rpc_error, from_status
from gateway.feedback import Interaction, RecentInteractions
from gateway.guard import Checked, Guard
from gateway.interactions import apply_retention
from gateway.prompts import Passage, choose_prompt, render
from gateway.ratelimit import Quota, RateLimiter, quotas_of
from gateway.settings import GatewaySettings
from gateway.timing import RequestTimer
from llmops import metrics, tracing
from llmops.apikeys import KeyRecord, TenantRecord
from llmops.bus.publisher import EventPublisher, event_time
from llmops.bus.topology import INTERACTION_EVENTS
from llmops.guardrails.events import Asked
from llmops.logging import get_logger
from llmops.pricebook import PriceBook
from llmops.prompts.mirror import PromptMirror
from llmops.prompts.model import PromptVersion
from llmops.routing.client import Inference
from llmops.routing.errors import RouteError
from llmops.service import Loaded
from llmops.streams import in_batches
from llmops.v1 import (
    embedding_pb2_grpc,
    events_pb2,
    gateway_pb2,
    inference_pb2,
    metering_pb2,
    retrieval_pb2,
    retrieval_pb2_grpc,
)

log = get_logger(__name__)
_CITATION_MARK = re.compile(r"\[(\d{1,3})\]")
_MODES = {
    gateway_pb2.SEARCH_MODE_OPTION_UNSPECIFIED: retrieval_pb2.SEARCH_MODE_HYBRID,
    gateway_pb2.SEARCH_MODE_OPTION_HYBRID: retrieval_pb2.SEARCH_MODE_HYBRID,
    gateway_pb2.SEARCH_MODE_OPTION_DENSE: retrieval_pb2.SEARCH_MODE_DENSE,
    gateway_pb2.SEARCH_MODE_OPTION_SPARSE: retrieval_pb2.SEARCH_MODE_SPARSE,
}


@dataclass
class Call:
    """One request as it enters the pipeline, from either API."""

    request: gateway_pb2.ChatRequest
    key: KeyRecord
    tenant: TenantRecord
    api: str  # grpc.chat | grpc.chat_once | openai.chat
    streamed: bool
    timeout_s: float
    trace_headers: dict[str, str] = field(default_factory=dict)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Upstreams:
    """The services the pipeline calls; stubs are made lazily inside the running loop."""

    retrieval: Callable[[], retrieval_pb2_grpc.RetrievalStub]
    inference: Callable[[], Inference]  # in-process or remote, per alias (LLMOPS_ROUTING)
    embedding: Callable[[], embedding_pb2_grpc.EmbeddingStub]


@dataclass(frozen=True)
class _Budget:
    """What every upstream call of a request carries: the time left and the trace headers."""

    deadline: float  # time.monotonic()
    metadata: tuple[tuple[str, str], ...]

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise GatewayError(grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed")
        return left


_LATE_S = 0.25  # an answer leaves at least this long before its deadline


@dataclass
class _Outcome:
    """What the event records, filled in as the request goes."""

    text: list[str] = field(default_factory=list)
    final: gateway_pb2.ChatFinal = field(default_factory=gateway_pb2.ChatFinal)
    failed_targets: list[str] = field(default_factory=list)
    checked: Checked | None = None  # what the guardrails did (None: no policy applies)


class ChatPipeline:
    def __init__(
        self,
        settings: GatewaySettings,
        prompts: PromptMirror,
        recent: RecentInteractions,
        upstreams: Upstreams,
        exact_cache: Loaded[ExactCache],
        limiter: Loaded[RateLimiter],
        events: Loaded[EventPublisher],
        prices: PriceBook,
        budgets: BudgetGuard,
        guard: Guard,
    ) -> None:
        self._settings = settings
        self._guard = guard
        self._prices = prices
        self._budgets = budgets
        self._prompts = prompts
        self._recent = recent
        self._upstreams = upstreams
        self._exact = exact_cache
        self._limiter = limiter
        self._events = events
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, call: Call) -> AsyncIterator[gateway_pb2.ChatResponse]:
        timer = RequestTimer()
        arrived = time.time()
        request_span, headers = tracing.start_request_span("gateway.chat", call.trace_headers)
        budget = _Budget(time.monotonic() + call.timeout_s, tuple(headers.items()))
        outcome = _Outcome()
        outcome.final.trace_id = tracing.trace_id_of_span(request_span)
        outcome.final.request_id = call.request_id
        status, error = "CANCELLED", "the caller went away"
        emitted = False
        try:
            async with self._budgets.admit(call.key) as record_cost:
                async for response in self._answer(call, timer, budget, outcome, arrived):
                    if response.WhichOneof("event") == "final":
                        # Answered: its event is stored before the caller has the answer,
                        # so a gateway killed right after loses no row (docs/scaleout.md).
                        record_cost(outcome.final.cost, call.request_id)
                        status, error = "OK", ""
                        emitted = True
                        event = self._record(call, timer, arrived, outcome, status, error)
                        acked = self._events.value.emit_acked(INTERACTION_EVENTS, event)
                        await self._stored(acked, budget)
                    yield response
        except GatewayError as exc:
            status, error = exc.code.name, exc.message
            raise
        except Exception as exc:
            status, error = "INTERNAL", f"{type(exc).__name__}: {exc}"
            log.exception("chat.failed", request_id=call.request_id)
            raise GatewayError(
                grpc.StatusCode.INTERNAL, "internal error; see gateway logs"
            ) from exc
        finally:
            request_span.set_attribute("llmops.status", status)
            request_span.end()
            if not emitted:
                event = self._record(call, timer, arrived, outcome, status, error)
                self._events.value.emit(INTERACTION_EVENTS, event)

    async def _stored(self, acked: asyncio.Future[None], budget: _Budget) -> None:
        """Wait for JetStream's ack of an answered request's event (a stream leader being
        elected takes seconds), but not past `event_ack_wait_s` nor the request's deadline:
        then the answer goes out and the event keeps retrying."""
        wait = min(self._settings.event_ack_wait_s, budget.deadline - time.monotonic() - _LATE_S)
        try:
            await asyncio.wait_for(asyncio.shield(acked), max(wait, 0.0))
        except (TimeoutError, RuntimeError) as exc:
            metrics.ERRORS.labels("gateway", "answered_before_event_stored").inc()
            log.warning("chat.event_not_stored_yet", error=repr(exc))

    async def _answer(
        self,
        call: Call,
        timer: RequestTimer,
        budget: _Budget,
        outcome: _Outcome,
        arrived: float,
    ) -> AsyncIterator[gateway_pb2.ChatResponse]:
        request = call.request
        question, history = _question(request)
        with timer.step("limits"):
            quotas = quotas_of(call.key, call.tenant)
            await self._limiter.value.check(quotas)
        resolved = choose_prompt(self._prompts, call.key.tenant, request, call.request_id)
        template = resolved.prompt
        final = outcome.final
        final.prompt, final.prompt_version = template.name, str(template.version)
        final.prompt_label, final.prompt_arm = resolved.label, resolved.arm
        asked = Asked(call.key.tenant, call.key.key_id, call.request_id, final.trace_id, "gateway")
        checking = self._check_input(call, question, asked, budget, outcome)
        try:
            async for response in self._guarded_answer(
                call,
                timer,
                budget,
                outcome,
                arrived,
                question,
                history,
                checking,
                asked,
                template,
                quotas,
            ):
                yield response
        finally:
            if checking is not None and not checking.done():
                checking.cancel()

    def _check_input(
        self, call: Call, question: str, asked: Asked, budget: _Budget, outcome: _Outcome
    ) -> asyncio.Task[None] | None:
        """The question's check, started now so it runs beside caches and retrieval."""
        policy = self._guard.policy(call.key.tenant, call.request.guardrail_policy)
        if policy is None:
            return None
        checked = outcome.checked = Checked(policy, question=question)
        if not policy.input.scanners():  # nothing to check: no task on the hot path
            return None
        return asyncio.create_task(self._guard.check_input(checked, asked, budget.left()))

    async def _guarded_answer(
        self,
        call: Call,
        timer: RequestTimer,
        budget: _Budget,
        outcome: _Outcome,
        arrived: float,
        question: str,
        history: list[inference_pb2.ChatMessage],
        checking: asyncio.Task[None] | None,
        asked: Asked,
        template: PromptVersion,
        quotas: list[Quota],
    ) -> AsyncIterator[gateway_pb2.ChatResponse]:
        request = call.request
        final = outcome.final
        checked = outcome.checked
        use_exact = call.tenant.exact_cache and not request.cache.no_exact
        use_semantic = call.tenant.semantic_cache and not request.cache.no_semantic and not history
        # Keys only for the caches in use: hashing the request is not free.
        exact_key = request_digest(call.key.tenant, request, template.digest) if use_exact else None
        scope = semantic_scope(request, template.digest) if use_semantic else None
        cached = await self._cached(
            call,
            timer,
            budget,
            question,
            exact_key,
            scope,
        )
        if cached is not None:
            await _settled(checking, timer)
            # A question that had to be redacted is never answered from (or put in) a cache:
            # the cached answer may hold someone else's restored values.
            if checked is None or not checked.redacted:
                for response in self._replay(*cached, timer, outcome):
                    yield response
                return
        if use_exact or use_semantic:
            final.cache = gateway_pb2.CACHE_STATUS_MISS
        else:
            final.cache = gateway_pb2.CACHE_STATUS_BYPASS

        hits = await self._retrieve_beside(call, timer, budget, question, checking)
        if checked is not None and checked.redacted:
            final.cache = gateway_pb2.CACHE_STATUS_BYPASS
            exact_key = scope = None
            question = checked.question
            history = _pseudonymised(history, checked.restore)
        hits, texts = await self._checked_passages(checked, hits, asked, timer, budget)
        passages = [Passage(number=i + 1, text=text) for i, text in enumerate(texts)]
        with timer.step("prompt"):
            messages = render(template, request, history, question, passages)
        generate = inference_pb2.GenerateRequest(
            model=request.model or template.model,
            prompt=question,
            context=texts,
            tenant=call.key.tenant,
            request_id=call.request_id,
            messages=messages,
            params=template.params.apply_to(request.params),
        )
        ending: list[inference_pb2.Final] = []
        async for delta in self._stream(generate, checked, texts, asked, timer, budget, ending):
            outcome.text.append(delta.delta.text)
            yield delta
        done = ending[0]  # the stream ends with the Final or raises
        self._settle(final, done, arrived, outcome, hits)
        closing = self._closing(final, timer)
        yield closing
        answer = "".join(outcome.text)
        self._remember(
            call,
            exact_key,
            scope,
            question,
            gateway_pb2.ChatReply(text=answer, final=closing.final),
        )
        if any(q.limits.tokens_per_minute for q in quotas):  # no task when nothing to charge
            self._later(
                self._limiter.value.charge_tokens(
                    quotas, done.usage.input_tokens + done.usage.output_tokens
                )
            )

    async def _checked_passages(
        self,
        checked: Checked | None,
        hits: list[retrieval_pb2.SearchHit],
        asked: Asked,
        timer: RequestTimer,
        budget: _Budget,
    ) -> tuple[list[retrieval_pb2.SearchHit], list[str]]:
        """The passages that may go into the prompt (injections left out, PII redacted)."""
        texts = [hit.text for hit in hits]
        if checked is None or not hits:
            return hits, texts
        with timer.step("guardrails.context", upstream=True):
            allowed = await self._guard.check_context(checked, texts, asked, budget.left())
        if allowed is None:
            return hits, texts
        kept = [(hit, text) for hit, text in zip(hits, allowed, strict=True) if text]
        return [h for h, _ in kept], [t for _, t in kept]

    async def _stream(
        self,
        generate: inference_pb2.GenerateRequest,
        checked: Checked | None,
        texts: list[str],
        asked: Asked,
        timer: RequestTimer,
        budget: _Budget,
        ending: list[inference_pb2.Final],
    ) -> AsyncIterator[gateway_pb2.ChatResponse]:
        """The answer's deltas, through the output check when the policy has one."""
        guarded = self._guard.needs_output_check(checked)
        pieces = self._pieces(generate, timer, budget, ending, timed=not guarded)
        if checked is not None and guarded:
            pieces = self._guard.check_output(checked, pieces, texts, asked, budget.left())
        async with contextlib.aclosing(pieces):  # a caller gone stops the model at once
            while True:
                began = time.perf_counter()
                try:
                    text = await anext(pieces)
                except StopAsyncIteration:
                    return
                finally:
                    if guarded:
                        timer.add("inference", time.perf_counter() - began, upstream=True)
                if text:
                    timer.mark_first_token()
                    yield gateway_pb2.ChatResponse(delta=inference_pb2.Delta(text=text))

    def _settle(
        self,
        final: gateway_pb2.ChatFinal,
        done: inference_pb2.Final,
        arrived: float,
        outcome: _Outcome,
        hits: list[retrieval_pb2.SearchHit],
    ) -> None:
        """The final message from the model's Final: model, usage, cost, citations, guardrails."""
        final.model_used = done.model_used
        final.usage.CopyFrom(done.usage)
        final.cost.CopyFrom(
            self._prices.cost(
                done.model_used, dt.datetime.fromtimestamp(arrived, dt.UTC), done.usage
            )
        )
        outcome.failed_targets.extend(done.failed_targets)
        cited = list(done.citations) or _marked(outcome.text, len(hits))
        final.citations.extend(_citation(hits[i], i + 1) for i in cited if 0 <= i < len(hits))
        if outcome.checked is not None:
            final.guardrails.CopyFrom(outcome.checked.summary)

    async def _retrieve_beside(
        self,
        call: Call,
        timer: RequestTimer,
        budget: _Budget,
        question: str,
        checking: asyncio.Task[None] | None,
    ) -> list[retrieval_pb2.SearchHit]:
        """Retrieval while the question is checked; a block cancels the search."""
        if checking is None:
            return await self._retrieve(call, timer, budget, question)
        began = time.perf_counter()
        search = asyncio.create_task(self._retrieve(call, timer, budget, question, timed=False))
        try:
            await checking
        except BaseException:
            search.cancel()
            raise
        finally:
            timer.add("guardrails.input", time.perf_counter() - began)
        hits = await search
        timer.waited(time.perf_counter() - began)
        return hits

    async def _pieces(
        self,
        generate: inference_pb2.GenerateRequest,
        timer: RequestTimer,
        budget: _Budget,
        ending: list[inference_pb2.Final],
        timed: bool,
    ) -> AsyncGenerator[str, None]:
        """The answer's text pieces; the inference Final is left in `ending`."""
        async for piece in self._generate(generate, timer, budget, timed):
            if isinstance(piece, inference_pb2.Final):
                ending.append(piece)
                return
            yield piece.text

    async def _cached(
        self,
        call: Call,
        timer: RequestTimer,
        budget: _Budget,
        question: str,
        exact_key: str | None,
        scope: str | None,
    ) -> tuple[gateway_pb2.ChatReply, gateway_pb2.CacheStatus.ValueType] | None:
        if exact_key is not None:
            with timer.step("cache.exact"):
                try:
                    reply = await self._exact.value.get(exact_key)
                except Exception as exc:  # a cache that is down is a miss, not a failure
                    log.warning("cache.exact_unavailable", error=str(exc))
                    reply = None
            if reply is not None:
                return reply, gateway_pb2.CACHE_STATUS_EXACT_HIT
        if scope is not None:
            lookup = retrieval_pb2.LookupAnswerRequest(
                tenant=call.key.tenant,
                scope=scope,
                question=question,
                min_score=self._settings.semantic_cache_min_score,
                max_age_s=int(self._settings.semantic_cache_ttl_s),
            )
            with timer.step("cache.semantic", upstream=True):
                try:
                    found = await self._upstreams.retrieval().LookupAnswer(
                        lookup, timeout=budget.left(), metadata=budget.metadata
                    )
                except grpc.aio.AioRpcError as exc:
                    log.warning("cache.semantic_unavailable", error=str(exc.details()))
                    return None
            if found.hit:
                return (
                    gateway_pb2.ChatReply.FromString(found.answer),
                    gateway_pb2.CACHE_STATUS_SEMANTIC_HIT,
                )
        return None

    async def _retrieve(
        self,
        call: Call,
        timer: RequestTimer,
        budget: _Budget,
        question: str,
        timed: bool = True,
    ) -> list[retrieval_pb2.SearchHit]:
        options = call.request.retrieval
        if options.disabled:
            return []
        search = retrieval_pb2.SearchRequest(
            tenant=call.key.tenant,
            query=question,
            top_k=options.top_k or self._settings.default_top_k,
            collection=call.request.collection,
            filters=call.request.filters,
            mode=_MODES.get(options.mode, retrieval_pb2.SEARCH_MODE_HYBRID),
        )
        with timer.step("retrieval", upstream=timed):
            try:
                found = await self._upstreams.retrieval().Search(
                    search, timeout=budget.left(), metadata=budget.metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error("retrieval", exc) from None
        return list(found.hits)

    async def _generate(
        self,
        generate: inference_pb2.GenerateRequest,
        timer: RequestTimer,
        budget: _Budget,
        timed: bool,
    ) -> AsyncIterator[inference_pb2.Delta | inference_pb2.Final]:
        """The inference stream's deltas, then its Final; time spent waiting counts upstream
        (unless the caller times it: a guarded answer waits on the guardrails, not on this)."""
        stream = self._upstreams.inference().generate(generate, budget.left(), budget.metadata)
        async with contextlib.aclosing(stream):  # we are cancelled or failed: stop upstream
            while True:
                began = time.perf_counter()
                try:
                    response = await anext(stream)
                except StopAsyncIteration:
                    raise GatewayError(
                        grpc.StatusCode.UNAVAILABLE, "inference ended the stream without a final"
                    ) from None
                except RouteError as exc:
                    raise from_status("inference", exc.code, exc.details) from None
                finally:
                    if timed:
                        timer.add("inference", time.perf_counter() - began, upstream=True)
                if response.HasField("final"):
                    yield response.final
                    return
                yield response.delta

    def _replay(
        self,
        reply: gateway_pb2.ChatReply,
        status: gateway_pb2.CacheStatus.ValueType,
        timer: RequestTimer,
        outcome: _Outcome,
    ) -> list[gateway_pb2.ChatResponse]:
        """A cache hit: the earlier answer, its model and citations; no usage or cost, as no
        model ran."""
        final = outcome.final
        final.model_used = reply.final.model_used
        final.cost.CopyFrom(metering_pb2.Cost(currency="USD", priced=True))
        final.citations.extend(reply.final.citations)
        final.cache = status
        timer.mark_first_token()
        outcome.text.append(reply.text)
        delta = gateway_pb2.ChatResponse(delta=inference_pb2.Delta(text=reply.text))
        return [delta, self._closing(final, timer)]

    def _closing(
        self, final: gateway_pb2.ChatFinal, timer: RequestTimer
    ) -> gateway_pb2.ChatResponse:
        final.time_to_first_token_ms = round(timer.ttft_ms, 3)
        final.overhead_ms = round(timer.overhead_ms, 3)
        del final.steps[:]
        final.steps.extend(timer.steps())
        return gateway_pb2.ChatResponse(final=final)

    def _remember(
        self,
        call: Call,
        exact_key: str | None,
        scope: str | None,
        question: str,
        reply: gateway_pb2.ChatReply,
    ) -> None:
        """Store a generated answer in the caches, off the request's path."""
        if exact_key is not None:
            self._later(self._exact.value.put(exact_key, reply))
        if scope is not None:
            store = retrieval_pb2.StoreAnswerRequest(
                tenant=call.key.tenant,
                scope=scope,
                question=question,
                answer=reply.SerializeToString(),
            )
            self._later(self._upstreams.retrieval().StoreAnswer(store, timeout=10.0))

    def _later(self, work: object) -> None:
        async def run() -> None:
            try:
                await work  # type: ignore[misc]
            except Exception as exc:
                log.warning("gateway.background_failed", error=str(exc))

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Let cache writes and token charges in flight finish (shutdown)."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5.0)

    def _record(
        self,
        call: Call,
        timer: RequestTimer,
        arrived: float,
        outcome: _Outcome,
        status: str,
        error: str,
    ) -> events_pb2.InteractionEvent:
        """The request's interaction event (the caller publishes it), metrics and log line."""
        final = outcome.final
        event = events_pb2.InteractionEvent(
            event_id=uuid.uuid4().hex,
            tenant=call.key.tenant,
            key_id=call.key.key_id,
            request_id=call.request_id,
            trace_id=final.trace_id,
            api=call.api,
            model_requested=call.request.model,
            model_used=final.model_used,
            failed_targets=outcome.failed_targets,
            prompt=final.prompt,
            prompt_version=final.prompt_version,
            prompt_label=final.prompt_label,
            prompt_arm=final.prompt_arm,
            usage=final.usage,
            cost=final.cost,
            steps=timer.steps(),
            time_to_first_token_ms=timer.ttft_ms,
            total_ms=timer.total_ms,
            overhead_ms=timer.overhead_ms,
            cache=final.cache,
            citations=final.citations,
            status=status,
            error=error,
            streamed=call.streamed,
            collection=call.request.collection,
        )
        event.time.CopyFrom(event_time(arrived))
        self._recent.add(
            Interaction(call.key.tenant, call.request_id, final.trace_id, int(arrived * 1000))
        )
        question = call.request.messages[-1].content if call.request.messages else ""
        answer = "".join(outcome.text)
        checked = outcome.checked
        if checked is not None:
            event.guardrails.CopyFrom(checked.summary)
            # What the guardrails redacted stays redacted here: the restored answer and the
            # caller's own question are the caller's, not the analysts'.
            if checked.redacted:
                question = checked.question
            if checked.answer:
                answer = "".join(checked.answer)
        apply_retention(event, self._settings.event_text, question, answer)
        cache = gateway_pb2.CacheStatus.Name(final.cache).removeprefix("CACHE_STATUS_").lower()
        metrics.CHAT_REQUESTS.labels(call.api, status, cache).inc()
        metrics.GATEWAY_OVERHEAD.labels(call.api).observe(timer.overhead_ms / 1000)
        if timer.first_token_s is not None and final.model_used:
            metrics.TIME_TO_FIRST_TOKEN.labels(final.model_used).observe(timer.first_token_s)
        # Every request is in its interaction event already: the log line is for failures
        # (debug level shows them all).
        (log.debug if status == "OK" else log.info)(
            "chat.done",
            request_id=call.request_id,
            trace_id=final.trace_id,
            tenant=call.key.tenant,
            status=status,
            model=final.model_used,
            cache=cache,
            ms=round(timer.total_ms, 1),
            overhead_ms=round(timer.overhead_ms, 2),
            error=error or None,
        )
        return event


async def coalesced(
    responses: AsyncIterator[gateway_pb2.ChatResponse],
) -> AsyncIterator[gateway_pb2.ChatResponse]:
    """`responses` with the deltas that piled up while the caller was sending joined into one."""
    batches = in_batches(responses)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            if len(batch) == 1:  # the usual case with a fast reader: nothing to join
                yield batch[0]
                continue
            texts = [r.delta.text for r in batch if r.HasField("delta")]
            if texts:
                yield gateway_pb2.ChatResponse(delta=inference_pb2.Delta(text="".join(texts)))
            for response in batch:
                if response.HasField("final"):
                    yield response


_ROLES = frozenset(("system", "user", "assistant"))


def _question(request: gateway_pb2.ChatRequest) -> tuple[str, list[inference_pb2.ChatMessage]]:
    """The last user message (the question) and the turns before it."""
    if not request.messages:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "messages is empty")
    last = request.messages[-1]
    if last.role != "user" or not last.content.strip():
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the last message must be a non-empty user message (the question)",
        )
    if any(m.role not in _ROLES for m in request.messages):
        roles = {m.role for m in request.messages} - _ROLES
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unknown message roles {sorted(roles)}; use system, user or assistant",
        )
    return last.content, list(request.messages[:-1])


async def _settled(checking: asyncio.Task[None] | None, timer: RequestTimer) -> None:
    """Wait for the question's check (a GatewayError if it was blocked)."""
    if checking is not None:
        with timer.step("guardrails.input", upstream=True):
            await checking


def _pseudonymised(
    history: list[inference_pb2.ChatMessage], restore: dict[str, str]
) -> list[inference_pb2.ChatMessage]:
    """Earlier turns with the values the question's check redacted replaced there too."""
    if not restore:
        return history
    pairs = sorted(restore.items(), key=lambda kv: -len(kv[1]))  # longest value first
    turns = []
    for message in history:
        content = message.content
        for placeholder, value in pairs:
            content = content.replace(value, placeholder)
        turns.append(inference_pb2.ChatMessage(role=message.role, content=content))
    return turns


def _marked(text: list[str], passages: int) -> list[int]:
    """Passage indices a generative answer cites as [n], in order of first mention."""
    seen: list[int] = []
    for match in _CITATION_MARK.finditer("".join(text)):
        index = int(match.group(1)) - 1
        if 0 <= index < passages and index not in seen:
            seen.append(index)
    return seen


def _citation(hit: retrieval_pb2.SearchHit, number: int) -> gateway_pb2.Citation:
    return gateway_pb2.Citation(
        number=number,
        chunk_id=hit.chunk_id,
        doc_id=hit.doc_id,
        source=hit.source,
        title=hit.title,
        score=hit.score,
    )
