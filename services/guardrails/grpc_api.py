"""`llmops.v1.Guardrails`: the edge where requests are validated and errors become statuses.

Bad input is INVALID_ARGUMENT naming the limit or the field; a tenant with no
policy of that name (nor a baseline one) is NOT_FOUND; a check that could not
finish under a fail-closed policy is UNAVAILABLE. The restore mapping is put
in the reply only for a policy that restores, and is never logged.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from guardrails.checker import Checker, FailedClosed, TextCheck
from guardrails.scanners.registry import DIRECTIONS
from guardrails.settings import GuardrailsSettings
from guardrails.streaming import OutputStream
from guardrails.verdicts import verdict_proto
from llmops import metrics
from llmops.apikeys import TENANT_RE
from llmops.guardrails.events import Asked
from llmops.guardrails.placeholders import Pseudonyms
from llmops.guardrails.policy import DEFAULT_POLICY, Policy, check_json_schema
from llmops.guardrails.store import PolicyMirror
from llmops.v1 import guardrails_pb2, guardrails_pb2_grpc

_ACTIONS = {
    "allow": guardrails_pb2.ACTION_ALLOW,
    "redact": guardrails_pb2.ACTION_REDACT,
    "block": guardrails_pb2.ACTION_BLOCK,
}
_NOT_RESTORED = "<SECRET_"  # a secret stays redacted, even for the caller who sent it
CALLER_HEADER = "x-llmops-caller"


class _Invalid(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class GuardrailsServicer(guardrails_pb2_grpc.GuardrailsServicer):
    def __init__(
        self, settings: GuardrailsSettings, policies: PolicyMirror, checker: Checker
    ) -> None:
        self._settings = settings
        self._policies = policies
        self._checker = checker

    async def Check(
        self, request: guardrails_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> guardrails_pb2.CheckResponse:
        try:
            policy = self._policy(request.tenant, request.policy)
            direction = DIRECTIONS.get(request.direction)
            if direction is None:
                raise _Invalid(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "direction must be INPUT, OUTPUT, CONTEXT or DOCUMENT",
                )
            self._check_sizes(request, direction)
            schema = _schema(request.json_schema)
        except _Invalid as exc:
            await _abort(context, exc.code, str(exc))
        asked = _asked(request, context)
        response = guardrails_pb2.CheckResponse(
            policy_id=policy.policy_id,
            policy_version=policy.version,
            fail_closed=policy.fail_mode == "closed",
        )
        try:
            if direction == "context":
                check = TextCheck(direction, list(request.passages))
                found = await self._checker.check_context(policy, check, asked)
                response.action = _ACTIONS[found.action]
                response.passages.extend(found.passages)
                response.blocked_passages.extend(found.blocked)
                verdicts = found.verdicts
            else:
                pseudonyms = Pseudonyms()
                check = TextCheck(direction, [request.text], list(request.passages), schema)
                outcome = await self._checker.check_text(policy, check, asked, pseudonyms)
                response.action = _ACTIONS[outcome.action]
                response.reason = outcome.reason
                if outcome.action == "redact":
                    response.text = outcome.text
                    if direction == "input" and policy.restores_pii():
                        response.restore.update(_restorable(pseudonyms.mapping))
                verdicts = outcome.verdicts
        except FailedClosed as exc:
            metrics.GUARDRAIL_CHECKS.labels(direction, "unavailable").inc()
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        response.verdicts.extend(verdict_proto(v) for v in verdicts)
        response.latency_ms = round(sum(v.latency_ms for v in verdicts), 3)
        _observe(direction, guardrails_pb2.Action.Name(response.action), verdicts)
        return response

    async def CheckStream(
        self,
        request_iterator: AsyncIterator[guardrails_pb2.StreamCheckRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[guardrails_pb2.StreamCheckResponse]:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("start"):
            await _abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be `start`"
            )
        start = first.start
        try:
            policy = self._policy(start.tenant, start.policy)
            schema = _schema(start.json_schema)
        except _Invalid as exc:
            await _abort(context, exc.code, str(exc))
        asked = Asked(
            start.tenant, start.key_id, start.request_id, start.trace_id, _caller(context)
        )
        stream = OutputStream(
            self._checker, policy, asked, list(start.passages), schema, dict(start.restore)
        )
        held = 0
        try:
            async for message in request_iterator:
                if message.HasField("piece"):
                    held += len(message.piece)
                    if held > self._settings.guardrails_max_text_chars:
                        await _abort(
                            context,
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"the answer is longer than {self._settings.guardrails_max_text_chars}"
                            " characters (LLMOPS_GUARDRAILS_MAX_TEXT_CHARS)",
                        )
                    replies = await stream.feed(message.piece)
                elif message.HasField("end"):
                    replies = await stream.end()
                else:
                    continue
                for reply in replies:
                    yield reply
                    if reply.blocked or reply.done:
                        _observe_stream(reply)
                        return
        except FailedClosed as exc:
            metrics.GUARDRAIL_CHECKS.labels("output", "unavailable").inc()
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        finally:
            stream.close()

    def _policy(self, tenant: str, name: str) -> Policy:
        if not TENANT_RE.match(tenant):
            raise _Invalid(grpc.StatusCode.INVALID_ARGUMENT, f"invalid tenant {tenant!r}")
        name = name or DEFAULT_POLICY
        policy = self._policies.resolve(tenant, name)
        if policy is None:
            raise _Invalid(
                grpc.StatusCode.NOT_FOUND,
                f"no guardrail policy {name!r} for tenant {tenant!r} or the baseline tenant",
            )
        return policy

    def _check_sizes(self, request: guardrails_pb2.CheckRequest, direction: str) -> None:
        limit, setting = (
            (self._settings.guardrails_max_document_chars, "LLMOPS_GUARDRAILS_MAX_DOCUMENT_CHARS")
            if direction == "documents"
            else (self._settings.guardrails_max_text_chars, "LLMOPS_GUARDRAILS_MAX_TEXT_CHARS")
        )
        if direction == "context":
            if not request.passages:
                raise _Invalid(grpc.StatusCode.INVALID_ARGUMENT, "passages is empty")
            texts = list(request.passages)
        else:
            if not request.text.strip():
                raise _Invalid(grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
            texts = [request.text]
        for text in texts:
            if len(text) > limit:
                raise _Invalid(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"text of {len(text)} characters is over the limit of {limit} ({setting})",
                )


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("abort raises")  # grpc's abort always raises; this tells mypy


def _schema(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        schema = json.loads(text)
        if not isinstance(schema, dict):
            raise ValueError("a JSON schema is an object")
        check_json_schema(schema)
    except ValueError as exc:
        raise _Invalid(grpc.StatusCode.INVALID_ARGUMENT, f"json_schema: {exc}") from None
    return schema


def _restorable(mapping: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in mapping.items() if not k.startswith(_NOT_RESTORED)}


def _caller(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_HEADER:
            return str(value)[:32]
    return "api"


def _asked(request: guardrails_pb2.CheckRequest, context: grpc.aio.ServicerContext) -> Asked:
    return Asked(
        request.tenant, request.key_id, request.request_id, request.trace_id, _caller(context)
    )


def _observe(direction: str, action: str, verdicts: Any) -> None:
    metrics.GUARDRAIL_CHECKS.labels(direction, action.removeprefix("ACTION_").lower()).inc()
    for v in verdicts:
        if not v.unscanned:
            metrics.GUARDRAIL_SCANNER_SECONDS.labels(v.scanner).observe(v.latency_ms / 1000)


def _observe_stream(reply: guardrails_pb2.StreamCheckResponse) -> None:
    metrics.GUARDRAIL_CHECKS.labels("output", "block" if reply.blocked else "allow").inc()
