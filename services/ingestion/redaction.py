"""A tenant's policy can redact documents before they are chunked, embedded or stored.

The tenant's `default` guardrail policy (or the baseline tenant's) names what
to redact in `documents:`; each section's text is checked by the guardrails
service and replaced by its redacted form. Redaction is never skipped: with
the guardrails unreachable the document waits in JetStream (`Unavailable`)
until they are back, so nothing the policy protects is ever indexed in clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import grpc

from ingestion.parsing import Section
from ingestion.pipeline import PreparedDocument
from llmops.bus.stage import Unavailable
from llmops.guardrails.policy import DEFAULT_POLICY
from llmops.guardrails.store import PolicyMirror
from llmops.v1 import documents_pb2, guardrails_pb2, guardrails_pb2_grpc

_CONCURRENT = 8  # sections checked at once
_CALLER = (("x-llmops-caller", "ingestion"),)
_TIMEOUT_S = 30.0


class DocumentRedactor:
    def __init__(
        self, policies: PolicyMirror, stub: Callable[[], guardrails_pb2_grpc.GuardrailsStub]
    ) -> None:
        self._policies = policies
        self._stub = stub

    async def redact(
        self, doc: documents_pb2.Document, prepared: PreparedDocument
    ) -> PreparedDocument:
        """`prepared` with each section redacted as the tenant's policy asks (same hash)."""
        policy = self._policies.resolve(doc.tenant, DEFAULT_POLICY)
        if policy is None or not policy.documents.scanners():
            return prepared
        limit = asyncio.Semaphore(_CONCURRENT)

        async def one(section: Section) -> Section:
            request = guardrails_pb2.CheckRequest(
                tenant=doc.tenant,
                policy=policy.name,
                direction=guardrails_pb2.DIRECTION_DOCUMENT,
                text=section.text,
                request_id=doc.doc_id,
            )
            async with limit:
                try:
                    reply = await self._stub().Check(request, timeout=_TIMEOUT_S, metadata=_CALLER)
                except grpc.aio.AioRpcError as exc:
                    raise Unavailable(
                        f"guardrails: {exc.code().name}: {exc.details()} (the document waits "
                        "until its policy's redaction can run)"
                    ) from None
            if reply.action == guardrails_pb2.ACTION_REDACT:
                return replace(section, text=reply.text)
            return section

        sections = await asyncio.gather(*(one(s) for s in prepared.parsed.sections))
        return PreparedDocument(
            replace(prepared.parsed, sections=list(sections)), prepared.content_hash
        )
