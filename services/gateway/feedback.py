"""Feedback on answers: a thumbs up/down or a score for one of the tenant's interactions.

The interaction is looked up before anything is stored, so feedback for an unknown
request, or for another tenant's, is refused (NOT_FOUND) instead of polluting the
tables. The lookup asks this replica's memory of the requests it answered lately,
then ClickHouse through the analytics service with the caller's own key (so the
analytics service's tenant scoping applies too), retrying for a few seconds: an
interaction event may still be on its way.

Idempotent: the event id is a hash of (tenant, request, source, user) and the event's
`time` is the interaction's, so a repeated judgement replaces the earlier one in the
ReplacingMergeTree and JetStream's duplicate window drops an exact retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from nats.js import JetStreamContext

from gateway.errors import GatewayError
from llmops.apikeys import KeyRecord
from llmops.bus.topology import FEEDBACK_EVENTS
from llmops.logging import get_logger
from llmops.redaction import redact
from llmops.v1 import analytics_pb2, analytics_pb2_grpc, events_pb2, gateway_pb2

log = get_logger(__name__)
MAX_COMMENT_CHARS = 4000
_LOOKUP_SQL = (
    "SELECT request_id, trace_id, toUnixTimestamp64Milli(time) AS ms FROM interactions "
    "WHERE tenant = {tenant:String} AND (request_id = {id:String} OR trace_id = {id:String}) "
    "ORDER BY time DESC LIMIT 1"
)


@dataclass(frozen=True)
class Interaction:
    tenant: str
    request_id: str
    trace_id: str
    time_ms: int


class RecentInteractions:
    """The last requests this replica answered, by request id and trace id (bounded LRU)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._by_id: OrderedDict[str, Interaction] = OrderedDict()

    def add(self, interaction: Interaction) -> None:
        for key in (interaction.request_id, interaction.trace_id):
            if key:
                self._by_id[key] = interaction
                self._by_id.move_to_end(key)
        while len(self._by_id) > self._capacity:
            self._by_id.popitem(last=False)

    def get(self, tenant: str, some_id: str) -> Interaction | None:
        found = self._by_id.get(some_id)
        return found if found is not None and found.tenant == tenant else None


def feedback_event_id(tenant: str, request_id: str, source: str, user: str) -> str:
    """The same judge judging the same answer again gets the same id (it replaces the first)."""
    return hashlib.sha256(f"{tenant}\0{request_id}\0{source}\0{user}".encode()).hexdigest()[:32]


def _score(request: gateway_pb2.FeedbackRequest) -> tuple[float, int]:
    thumbs = {gateway_pb2.THUMBS_UP: 1, gateway_pb2.THUMBS_DOWN: -1}.get(request.thumbs, 0)
    if request.HasField("score"):
        return request.score, thumbs
    if thumbs == 0:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT, "feedback needs thumbs (up/down) or a score"
        )
    return float(thumbs), thumbs


class FeedbackDesk:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        analytics: Callable[[], analytics_pb2_grpc.AnalyticsStub],
        recent: RecentInteractions,
        event_text: str,
        lookup_s: float,
    ) -> None:
        self._js = js
        self._analytics = analytics
        self._recent = recent
        self._event_text = event_text
        self._lookup_s = lookup_s

    async def give(
        self, key: KeyRecord, authorization: str, request: gateway_pb2.FeedbackRequest
    ) -> gateway_pb2.FeedbackReply:
        some_id = request.request_id or request.trace_id
        if not some_id:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT, "feedback needs the request_id (or trace_id)"
            )
        if len(request.comment) > MAX_COMMENT_CHARS:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the comment has {len(request.comment)} characters; at most {MAX_COMMENT_CHARS}",
            )
        score, thumbs = _score(request)
        interaction = await self._find(key.tenant, some_id, authorization)
        source = request.source or "user"
        event = events_pb2.FeedbackEvent(
            event_id=feedback_event_id(key.tenant, interaction.request_id, source, request.user),
            tenant=key.tenant,
            key_id=key.key_id,
            request_id=interaction.request_id,
            trace_id=interaction.trace_id,
            score=score,
            thumbs=thumbs,
            label=request.label,
            comment=self._kept(request.comment),
            source=source,
        )
        event.time.FromMilliseconds(interaction.time_ms)
        given_ms = int(time.time() * 1000)
        event.given_at.FromMilliseconds(given_ms)
        headers = {"Nats-Msg-Id": f"{event.event_id}-{given_ms}"}  # this judgement, once
        try:
            await self._js().publish(FEEDBACK_EVENTS, event.SerializeToString(), headers=headers)
        except Exception as exc:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE, f"the feedback could not be stored now: {exc}"
            ) from exc
        return gateway_pb2.FeedbackReply(event_id=event.event_id, request_id=event.request_id)

    def _kept(self, comment: str) -> str:
        """A comment is user text: kept like questions are (LLMOPS_EVENT_TEXT)."""
        if self._event_text == "full":
            return comment
        return redact(comment) if self._event_text == "redacted" else ""

    async def _find(self, tenant: str, some_id: str, authorization: str) -> Interaction:
        """The tenant's interaction with this request (or trace) id, waiting out the event's way."""
        deadline = time.monotonic() + self._lookup_s
        delay = 0.1
        while True:
            found = self._recent.get(tenant, some_id) or await self._query(
                tenant, some_id, authorization
            )
            if found is not None:
                return found
            if time.monotonic() + delay > deadline:
                raise GatewayError(
                    grpc.StatusCode.NOT_FOUND,
                    f"no interaction {some_id!r} of this tenant (unknown, or not yours)",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _query(self, tenant: str, some_id: str, authorization: str) -> Interaction | None:
        query = analytics_pb2.QueryRequest(
            sql=_LOOKUP_SQL, parameters={"tenant": tenant, "id": some_id}, max_rows=1
        )
        try:
            reply = await self._analytics().Query(
                query, metadata=(("authorization", authorization),), timeout=5.0
            )
        except grpc.aio.AioRpcError as exc:
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot look the interaction up (analytics: {exc.code().name}); try again",
            ) from exc
        if not reply.rows:
            return None
        request_id, trace_id, ms = list(reply.rows[0].values)
        return Interaction(
            tenant, request_id.string_value, trace_id.string_value, int(ms.number_value)
        )
