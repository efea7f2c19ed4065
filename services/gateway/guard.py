"""The gateway's side of the guardrails: the tenant's policy on the question, the passages
and the answer of every request, and what happens when the guardrails cannot answer.

The policy is read from a watched copy of the policies bucket (no round trip),
which also says whether a request needs checking at all and how to fail:
guardrails down or past the policy's time budget either lets the request
through with an explicit `unscanned` verdict (fail open; the gateway records
it, since the guardrails never saw the text) or refuses it with UNAVAILABLE
(fail closed) — never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from gateway.errors import GatewayError
from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import GUARDRAIL_EVENTS
from llmops.guardrails.events import Asked, guardrail_event
from llmops.guardrails.placeholders import Restorer
from llmops.guardrails.policy import DEFAULT_POLICY, Policy
from llmops.guardrails.store import PolicyMirror
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.streams import in_batches
from llmops.v1 import guardrails_pb2, guardrails_pb2_grpc

log = get_logger(__name__)
_MARGIN_S = 0.5  # queueing and the hop, beyond the policy's own time budget
_CALLER = (("x-llmops-caller", "gateway"),)
_ACTION = {
    guardrails_pb2.ACTION_ALLOW: "allow",
    guardrails_pb2.ACTION_REDACT: "redact",
    guardrails_pb2.ACTION_BLOCK: "block",
}
_SWALLOWED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class Checked:
    """What the guardrails did to one request, filled in as it goes."""

    policy: Policy
    summary: guardrails_pb2.GuardrailSummary = field(
        default_factory=guardrails_pb2.GuardrailSummary
    )
    question: str = ""  # what the model may see: the question, redacted if it had to be
    redacted: bool = False
    restore: dict[str, str] = field(default_factory=dict)
    answer: list[str] = field(default_factory=list)  # the answer as checked, not restored

    def __post_init__(self) -> None:
        self.summary.policy = self.policy.policy_id
        self.summary.policy_version = self.policy.version

    def fired(self, verdicts: list[guardrails_pb2.Verdict]) -> None:
        names = {v.scanner for v in verdicts if v.action} - set(self.summary.fired)
        self.summary.fired.extend(sorted(names))


class Guard:
    def __init__(
        self,
        policies: PolicyMirror,
        stub: Callable[[], guardrails_pb2_grpc.GuardrailsStub],
        events: Loaded[EventPublisher],
    ) -> None:
        self.policies = policies
        self._stub = stub
        self._events = events

    def policy(self, tenant: str, name: str) -> Policy | None:
        return self.policies.resolve(tenant, name or DEFAULT_POLICY)

    async def check_input(self, checked: Checked, asked: Asked, deadline_s: float) -> None:
        """Fill `checked` from the question's check; GatewayError when it must not go on."""
        policy = checked.policy
        began = time.perf_counter()
        try:
            reply = await self._check(
                policy,
                asked,
                deadline_s,
                direction=guardrails_pb2.DIRECTION_INPUT,
                text=checked.question,
            )
        except grpc.aio.AioRpcError as exc:
            checked.summary.input_ms = _ms(began)
            checked.summary.input_action = self._unscanned(policy, "input", exc, asked)
            return
        checked.summary.input_ms = _ms(began)
        action = _ACTION.get(reply.action, "allow")
        checked.summary.input_action = action
        checked.fired(list(reply.verdicts))
        if action == "block":
            raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, reply.reason)
        if action == "redact":
            checked.question, checked.redacted = reply.text, True
            checked.restore = dict(reply.restore)

    async def check_context(
        self, checked: Checked, passages: list[str], asked: Asked, deadline_s: float
    ) -> list[str] | None:
        """The passages as they may go into the prompt ("" = left out); None = as they are."""
        policy = checked.policy
        if not passages or not policy.context.scanners():
            return None
        try:
            reply = await self._check(
                policy,
                asked,
                deadline_s,
                direction=guardrails_pb2.DIRECTION_CONTEXT,
                passages=passages,
            )
        except grpc.aio.AioRpcError as exc:
            self._unscanned(policy, "context", exc, asked)
            return None
        checked.fired(list(reply.verdicts))
        checked.summary.blocked_passages = len(reply.blocked_passages)
        return list(reply.passages)

    def needs_output_check(self, checked: Checked | None) -> bool:
        return checked is not None and bool(checked.policy.output.scanners() or checked.restore)

    async def check_output(
        self,
        checked: Checked,
        pieces: AsyncIterator[str],
        passages: list[str],
        asked: Asked,
        deadline_s: float,
    ) -> AsyncGenerator[str, None]:
        """The answer as it may be shown, released as the guardrails pass it."""
        start = guardrails_pb2.StreamStart(
            tenant=asked.tenant,
            policy=checked.policy.name,
            passages=passages,
            restore=checked.restore,
            request_id=asked.request_id,
            key_id=asked.key_id,
            trace_id=asked.trace_id,
        )
        call = self._stub().CheckStream(timeout=deadline_s, metadata=_CALLER)
        pump = _Pump(call, start, pieces)
        task = asyncio.create_task(pump.run())
        # A failing answer (inference) ends the check too, so the read below wakes up.
        task.add_done_callback(lambda t: _failed(t) and call.cancel())
        consumed = 0
        checked.summary.output_action = "allow"
        try:
            try:
                async for reply in call:
                    consumed = reply.consumed
                    checked.summary.output_ms += sum(v.latency_ms for v in reply.verdicts)
                    checked.fired(list(reply.verdicts))
                    if reply.unrestored:
                        checked.answer.append(reply.unrestored)
                    if any(v.action == "redact" for v in reply.verdicts):
                        checked.summary.output_action = "redact"
                    if reply.blocked:
                        checked.summary.output_action = "block"
                        raise GatewayError(grpc.StatusCode.PERMISSION_DENIED, reply.reason)
                    if reply.released:
                        yield reply.released
                    if reply.done:
                        break
            except asyncio.CancelledError:
                # Our own cancel of the check (the answer failed) surfaces here as a cancel;
                # anything else (the caller went away) is a real one.
                current = asyncio.current_task()
                if (current is not None and current.cancelling()) or not _failed(task):
                    raise
                await task  # raises the answer's own error (inference, deadline, ...)
            except grpc.aio.AioRpcError as exc:
                if _failed(task):
                    await task  # the answer failed, not the guardrails: that error is the one
                checked.summary.output_action = self._unscanned(
                    checked.policy, "output", exc, asked
                )
                # The answer as the model wrote it goes to the event (placeholders kept);
                # the caller gets it restored.
                restorer = Restorer(checked.restore)
                async for rest in pump.unchecked(consumed):
                    checked.answer.append(rest)
                    yield restorer.feed(rest)
                yield restorer.flush()
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            call.cancel()

    async def _check(
        self, policy: Policy, asked: Asked, deadline_s: float, **fields: Any
    ) -> guardrails_pb2.CheckResponse:
        request = guardrails_pb2.CheckRequest(
            tenant=asked.tenant,
            policy=policy.name,
            request_id=asked.request_id,
            key_id=asked.key_id,
            trace_id=asked.trace_id,
            **fields,
        )
        timeout = min(deadline_s, policy.time_budget_ms / 1000 + _MARGIN_S)
        reply: guardrails_pb2.CheckResponse = await self._stub().Check(
            request, timeout=timeout, metadata=_CALLER
        )
        return reply

    def _unscanned(
        self, policy: Policy, direction: str, exc: grpc.aio.AioRpcError, asked: Asked
    ) -> str:
        """Fail open (recorded) or closed (GatewayError) on a guardrails failure."""
        code = exc.code()
        if code not in _SWALLOWED:
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise GatewayError(code, str(exc.details())) from None
            code = grpc.StatusCode.UNAVAILABLE
        why = f"guardrails unavailable ({code.name}: {exc.details()})"
        if policy.fail_mode == "closed":
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                f"{why}; the policy {policy.policy_id} fails closed",
            ) from None
        log.warning(
            "guardrails.unscanned", direction=direction, policy=policy.policy_id, error=code.name
        )
        event = guardrail_event(
            asked,
            policy,
            direction,
            guardrail="guardrails",
            verdict="allow",
            reason=why,
            unscanned=True,
            action="allow",
            passed=True,
        )
        self._events.value.emit(GUARDRAIL_EVENTS, event)
        return "unscanned"


class _Pump:
    """Feeds the answer's pieces to the check, and keeps them for a fail-open release.

    If the guardrails go away mid-answer the pump keeps reading the answer (it
    is never cancelled for that, which would cancel the model's stream), so
    what the check had not released yet can still go out, marked unscanned.
    """

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        start: guardrails_pb2.StreamStart,
        pieces: AsyncIterator[str],
    ) -> None:
        self._call = call
        self._start = start
        self._pieces = pieces
        self._written: list[str] = []
        self._broken = False
        self._finished = False
        self._news = asyncio.Event()

    async def run(self) -> None:
        await self._send(guardrails_pb2.StreamCheckRequest(start=self._start))
        # Pieces that came while the last write was in flight go as one (a whole answer at
        # once, for a caller that does not stream): one stream message each costs.
        batches = in_batches(self._pieces)
        try:
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    self._written.extend(batch)
                    self._news.set()
                    await self._send(guardrails_pb2.StreamCheckRequest(piece="".join(batch)))
        finally:
            self._finished = True
            self._news.set()
        await self._send(guardrails_pb2.StreamCheckRequest(end=True))
        if not self._broken:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self._call.done_writing()

    async def _send(self, message: guardrails_pb2.StreamCheckRequest) -> None:
        if self._broken:
            return
        try:
            await self._call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            self._broken = True  # the read side reports why

    async def unchecked(self, offset: int) -> AsyncIterator[str]:
        """The answer's text after its first `offset` characters, as it arrives."""
        index = 0  # pieces before it have been passed over or out
        while True:
            self._news.clear()
            while index < len(self._written):
                piece = self._written[index]
                index += 1
                if offset >= len(piece):
                    offset -= len(piece)
                    continue
                yield piece[offset:]
                offset = 0
            if self._finished:
                return
            await self._news.wait()


def _failed(task: asyncio.Task[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


def _ms(began: float) -> float:
    return round((time.perf_counter() - began) * 1000, 3)
