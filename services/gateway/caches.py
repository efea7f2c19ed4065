"""The two answer caches: exact (NATS KV, TTL) and semantic (through retrieval).

Exact: the digest of everything that shapes an answer (tenant, messages,
model alias, resolved prompt version, parameters, retrieval options) maps to
the reply, for `exact_cache_ttl_s`. Semantic: retrieval keeps earlier
questions of the tenant as vectors per *scope* (the same digest without the
question), and a new question close enough reuses the answer. Both store the
reply as a ChatReply protobuf; both are skipped per request (CacheOptions) or
per tenant (`llmops tenants set`).
"""

from __future__ import annotations

import hashlib
import struct
import time

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from llmops.v1 import gateway_pb2

_STAMP = struct.Struct("<d")


def _shaping(request: gateway_pb2.ChatRequest, prompt_digest: str) -> gateway_pb2.ChatRequest:
    """The request less what does not shape the answer: the prompt is named by its content's
    digest (whichever label, arm or tenant led to it), the user id only chose that arm."""
    shaping = gateway_pb2.ChatRequest()
    shaping.CopyFrom(request)
    shaping.ClearField("cache")
    shaping.ClearField("user")
    shaping.ClearField("prompt_label")
    shaping.prompt_version = prompt_digest
    return shaping


def request_digest(tenant: str, request: gateway_pb2.ChatRequest, prompt_digest: str) -> str:
    """The exact-cache key of a request: its tenant and every field that shapes the answer."""
    shaping = _shaping(request, prompt_digest)
    digest = hashlib.sha256(shaping.SerializeToString(deterministic=True)).hexdigest()
    return f"{tenant}.{digest}"


def semantic_scope(request: gateway_pb2.ChatRequest, prompt_digest: str) -> str:
    """What two questions must share to reuse each other's answer: all but the question."""
    shaping = _shaping(request, prompt_digest)
    shaping.ClearField("messages")
    return hashlib.sha256(shaping.SerializeToString(deterministic=True)).hexdigest()[:32]


class ExactCache:
    def __init__(self, kv: KeyValue, ttl_s: float) -> None:
        self._kv = kv
        self._ttl_s = ttl_s

    async def get(self, key: str) -> gateway_pb2.ChatReply | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        value = entry.value or b""
        if len(value) < _STAMP.size:
            return None
        (stored_at,) = _STAMP.unpack_from(value)
        if time.time() - stored_at > self._ttl_s:
            return None
        return gateway_pb2.ChatReply.FromString(value[_STAMP.size :])

    async def put(self, key: str, reply: gateway_pb2.ChatReply) -> None:
        await self._kv.put(key, _STAMP.pack(time.time()) + reply.SerializeToString())
