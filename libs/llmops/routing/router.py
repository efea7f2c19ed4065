"""Generate: resolve the alias, try its targets in order, stream the first that answers.

Per target: its circuit breaker first (open: skipped at once, "circuit open"),
then up to 1 + `retries` attempts, waiting `backoff_s`, 2 * `backoff_s`, ...
between them; only a failure before the first piece is retried or falls
through to the next target. Every skipped target's last error is listed in
Final.failed_targets (and in the UNAVAILABLE message when none answers).
Final.usage: what the target reported, else its `tokenizer`'s count, else 0.

The router is a library: the inference service serves it over gRPC (its
remote form, on the nodes next to Triton), and the gateway runs it in-process
for the aliases it answers itself (hosted upstreams: no second Python hop).
Either way one process holds one breaker per target.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from llmops.logging import get_logger
from llmops.routing.breaker import Breakers
from llmops.routing.errors import RouteError, TargetError
from llmops.routing.providers import Done, Provider, Usage
from llmops.routing.routes import Routes, Target, load_routes
from llmops.routing.usage import TokenCounter, input_texts, load_counters
from llmops.streams import in_batches
from llmops.v1 import inference_pb2

log = get_logger(__name__)
DEFAULT_TENANT = "default"


@dataclass(frozen=True)
class Loadout:
    """What start-up loads: the routes and the tokenizers they name (by `tokenizer:`)."""

    routes: Routes
    counters: Mapping[str, TokenCounter]
    source: str = ""  # the routes file it came from

    @classmethod
    def read(cls, routes_file: Path, models_dir: Path) -> Loadout:
        """The routes file and its tokenizers; RoutesFileError says what is wrong."""
        routes = load_routes(routes_file)
        return cls(routes, load_counters(routes, models_dir), str(routes_file))


class Router:
    def __init__(self, providers: Mapping[str, Provider], breakers: Breakers | None = None) -> None:
        self._providers = providers
        self._breakers = breakers or Breakers()
        self._loadout: Loadout | None = None

    def load(self, loadout: Loadout) -> None:
        self._loadout = loadout
        log.info(
            "routes.loaded",
            file=loadout.source,
            default=loadout.routes.default,
            aliases={alias: [t.name for t in ts] for alias, ts in loadout.routes.aliases.items()},
            tokenizers=sorted(loadout.counters),
        )

    @property
    def loadout(self) -> Loadout:
        if self._loadout is None:
            raise RuntimeError("the routes file is not loaded yet")
        return self._loadout

    @property
    def routes(self) -> Routes:
        return self.loadout.routes

    def list_models(self) -> inference_pb2.ListModelsResponse:
        """The routes file's aliases, the default first."""
        routes = self.routes
        names = [routes.default, *sorted(a for a in routes.aliases if a != routes.default)]
        return inference_pb2.ListModelsResponse(
            default=routes.default,
            aliases=[
                inference_pb2.ModelAlias(name=n, targets=[t.name for t in routes.aliases[n]])
                for n in names
            ],
        )

    async def generate(
        self, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        """The first answering target's deltas, then its Final; RouteError when the request
        is invalid, the alias unknown, or no target answered."""
        started = time.perf_counter()
        problem = _invalid(request)
        if problem:
            raise RouteError(grpc.StatusCode.INVALID_ARGUMENT, problem)
        routes = self.routes
        alias = request.model or routes.default
        targets = routes.targets(alias)
        if targets is None:
            known = ", ".join(sorted(routes.aliases))
            raise RouteError(
                grpc.StatusCode.NOT_FOUND, f"unknown model alias {alias!r}; known aliases: {known}"
            )
        failures: list[str] = []
        for target in targets:
            outcome = _Outcome()
            # aclosing: a caller that goes away closes the attempt, and so the upstream, now.
            attempt = self._try_target(alias, target, request, failures, outcome, started)
            async with contextlib.aclosing(attempt):
                async for response in attempt:
                    yield response
            if outcome.answered:
                log.debug(
                    "generate.done",
                    alias=alias,
                    target=target.name,
                    tenant=request.tenant or DEFAULT_TENANT,
                    request_id=request.request_id,
                    pieces=outcome.pieces,
                    deltas=outcome.deltas,
                    input_tokens=outcome.usage.input_tokens,
                    output_tokens=outcome.usage.output_tokens,
                    ttft_ms=round(outcome.first_ms, 1),
                    ms=round((time.perf_counter() - started) * 1000, 1),
                    attempts=outcome.attempts,
                    skipped=len(failures),
                )
                return
            failures.append(f"{target.name}: {outcome.error}")
        raise RouteError(
            grpc.StatusCode.UNAVAILABLE,
            f"no target of model alias {alias!r} answered: " + "; ".join(failures),
        )

    async def _try_target(
        self,
        alias: str,
        target: Target,
        request: inference_pb2.GenerateRequest,
        failures: list[str],
        outcome: _Outcome,
        started: float,
    ) -> AsyncGenerator[inference_pb2.GenerateResponse, None]:
        """Stream `target`'s answer (retrying a failure before its first piece), or record
        in `outcome` why it did not answer; a failure after the first piece raises an
        UNAVAILABLE RouteError (too late to fall back)."""
        breaker = self._breakers.get(target.key, target.circuit.failures, target.circuit.cooldown_s)
        while outcome.attempts <= target.retries:
            refusal = breaker.refusal()
            if refusal:
                outcome.error = f"{outcome.error}; then {refusal}" if outcome.attempts else refusal
                return
            if outcome.attempts:
                await asyncio.sleep(target.backoff_s * 2 ** (outcome.attempts - 1))
            outcome.attempts += 1
            outcome.pieces, outcome.deltas, outcome.first_ms = 0, 0, 0.0
            output: list[str] = []
            verdict = False
            try:
                # aclosing: a caller that goes away closes the provider's stream upstream too
                # (closing the batches cancels their reading task, which closes the stream).
                stream = self._providers[target.provider].generate(target, request)
                async with (
                    contextlib.aclosing(stream),
                    contextlib.aclosing(in_batches(stream)) as batches,
                ):
                    async for batch in batches:
                        # What piled up while the previous message was being handed on goes
                        # out as one Delta; a fast reader gets each piece alone.
                        done: Done | None = None
                        texts: list[str] = []
                        for event in batch:
                            if isinstance(event, Done):
                                done = event
                            else:
                                texts.append(event.text)
                        if texts:
                            if outcome.pieces == 0:
                                outcome.first_ms = (time.perf_counter() - started) * 1000
                            outcome.pieces += len(texts)
                            outcome.deltas += 1
                            output += texts
                            yield inference_pb2.GenerateResponse(
                                delta=inference_pb2.Delta(text="".join(texts))
                            )
                        if done is not None:
                            breaker.success()
                            verdict = outcome.answered = True
                            outcome.usage = self._usage(target, request, done, output)
                            yield _final(target, done, outcome, failures)
                            return
            except TargetError as exc:
                breaker.failure()
                verdict = True
                outcome.error = str(exc)
                log.warning(
                    "generate.target_failed",
                    alias=alias,
                    target=target.name,
                    request_id=request.request_id,
                    attempt=outcome.attempts,
                    pieces=outcome.pieces,
                    circuit=breaker.state.value,
                    error=outcome.error,
                )
                if outcome.pieces:  # the caller already has part of this target's answer
                    raise RouteError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"model alias {alias!r}: {target.name} failed after streaming "
                        f"{outcome.pieces} pieces: {exc}",
                    ) from None
            finally:
                if not verdict:  # the caller went away: no verdict on the target
                    breaker.release()
        if outcome.attempts > 1:
            outcome.error += f" (after {outcome.attempts} attempts)"

    def _usage(
        self,
        target: Target,
        request: inference_pb2.GenerateRequest,
        done: Done,
        output: list[str],
    ) -> Usage:
        """The target's reported usage, else its tokenizer's count, else zeros (logged)."""
        if done.usage is not None:
            return done.usage
        counter = self.loadout.counters.get(target.tokenizer or "")
        if counter is None:
            log.warning(
                "generate.usage_unknown",
                target=target.name,
                request_id=request.request_id,
                reason="the target reported no usage and has no `tokenizer` in the routes file; "
                "counted as 0",
            )
            return Usage(0, 0)
        return Usage(counter.count(input_texts(target, request)), counter.count(["".join(output)]))

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()


@dataclass
class _Outcome:
    """How trying one target went."""

    answered: bool = False
    attempts: int = 0
    pieces: int = 0  # the provider's pieces (Final.output_pieces)
    deltas: int = 0  # the Delta messages they went out in (fewer when batched)
    first_ms: float = 0.0
    error: str = ""
    usage: Usage = field(default_factory=lambda: Usage(0, 0))


def _final(
    target: Target, done: Done, outcome: _Outcome, failures: list[str]
) -> inference_pb2.GenerateResponse:
    usage = outcome.usage
    return inference_pb2.GenerateResponse(
        final=inference_pb2.Final(
            citations=list(done.citations),
            model_used=target.name,
            output_pieces=outcome.pieces,
            time_to_first_token_ms=outcome.first_ms,
            usage=inference_pb2.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                reasoning_tokens=usage.reasoning_tokens,
            ),
            failed_targets=failures,
        )
    )


def _invalid(request: inference_pb2.GenerateRequest) -> str:
    """Why the request is invalid ("" when it is not)."""
    if not request.prompt.strip() and not any(m.content.strip() for m in request.messages):
        return "prompt is empty"
    if request.max_sentences < 0:
        return f"max_sentences must be 0 (the model's default) or more, got {request.max_sentences}"
    params = request.params
    if params.max_tokens < 0:
        return f"params.max_tokens must be 0 (the model's default) or more, got {params.max_tokens}"
    if params.HasField("temperature") and not (
        math.isfinite(params.temperature) and params.temperature >= 0
    ):
        return f"params.temperature must be 0 or more, got {params.temperature}"
    if params.HasField("top_p") and not 0 < params.top_p <= 1:
        return f"params.top_p must be in (0, 1], got {params.top_p}"
    return ""
