"""Which interactions are scored online: a per-tenant share, chosen by a hash of the request id.

A hash, not a random draw, so every replica and every redelivery of an interaction
make the same choice, and a tenant's share can be raised without re-scoring what
was already chosen (a request in the 10% is also in the 20%).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from llmops.v1 import events_pb2, gateway_pb2

_CACHE_HITS = (gateway_pb2.CACHE_STATUS_EXACT_HIT, gateway_pb2.CACHE_STATUS_SEMANTIC_HIT)


def share_of(request_id: str) -> float:
    """Where the request falls in [0, 1), uniformly over request ids."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Sampler:
    def __init__(self, default_rate: float, rates: Mapping[str, float]) -> None:
        self._default = default_rate
        self._rates = dict(rates)

    def rate(self, tenant: str) -> float:
        return self._rates.get(tenant, self._default)

    def chosen(self, event: events_pb2.InteractionEvent) -> bool:
        return share_of(event.request_id or event.event_id) < self.rate(event.tenant)


def unscorable(event: events_pb2.InteractionEvent) -> str | None:
    """Why a chosen interaction cannot be scored, or None when it can.

    Failed requests have no answer to judge; a cache hit repeats an answer already
    judged when it was generated; without the texts (text retention `off`, or an
    embeddings call) there is nothing to score.
    """
    if event.status != "OK":
        return "failed"
    if event.cache in _CACHE_HITS:
        return "cache_hit"
    if event.text_retention == events_pb2.TEXT_RETENTION_OFF:
        return "no_text"
    if not event.question.strip() or not event.answer.strip():
        return "no_text"
    return None
