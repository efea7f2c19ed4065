"""`/v1/embeddings`: the platform's embedding model behind the same keys, limits, budgets,
prices and events."""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from gateway.budgets import BudgetGuard
from gateway.errors import GatewayError
from gateway.ratelimit import Quota, RateLimiter
from llmops.apikeys import KeyRecord
from llmops.bus.publisher import EventPublisher
from llmops.bus.topology import INTERACTION_EVENTS
from llmops.pricebook import PriceBook, amount
from llmops.service import Loaded
from llmops.v1 import embedding_pb2, embedding_pb2_grpc, events_pb2, inference_pb2


class EmbeddingsFlow:
    def __init__(
        self,
        embedding: Callable[[], embedding_pb2_grpc.EmbeddingStub],
        limiter: Loaded[RateLimiter],
        events: Loaded[EventPublisher],
        prices: PriceBook,
        budgets: BudgetGuard,
    ) -> None:
        self._embedding = embedding
        self._limiter = limiter
        self._events = events
        self._prices = prices
        self._budgets = budgets

    async def embed(
        self,
        quotas: list[Quota],
        key: KeyRecord,
        texts: list[str],
        encoding: str,
        timeout_s: float,
    ) -> dict[str, Any]:
        """An OpenAI embeddings response body for `texts`; GatewayError when refused or down."""
        started = time.perf_counter()
        event = events_pb2.InteractionEvent(
            event_id=uuid.uuid4().hex,
            tenant=key.tenant,
            key_id=key.key_id,
            request_id=uuid.uuid4().hex,
            api="openai.embeddings",
            text_retention=events_pb2.TEXT_RETENTION_OFF,
        )
        event.time.GetCurrentTime()
        try:
            await self._limiter.value.check(quotas)
            async with self._budgets.admit(key) as record_cost:
                try:
                    result = await self._embedding().Embed(
                        embedding_pb2.EmbedRequest(texts=texts), timeout=timeout_s
                    )
                except grpc.aio.AioRpcError as exc:
                    raise GatewayError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"embedding: {exc.code().name}: {exc.details()}",
                    ) from None
                tokens = sum(result.token_counts)
                event.model_used = f"embedding/{result.model}"
                event.usage.CopyFrom(inference_pb2.Usage(input_tokens=tokens))
                at = event.time.ToDatetime(dt.UTC)
                event.cost.CopyFrom(self._prices.cost(event.model_used, at, event.usage))
                record_cost(event.cost, event.request_id)
            event.status = "OK"
            await self._limiter.value.charge_tokens(quotas, tokens)
        except GatewayError as exc:
            event.status, event.error = exc.code.name, exc.message
            raise
        finally:
            event.total_ms = (time.perf_counter() - started) * 1000
            self._events.value.emit(INTERACTION_EVENTS, event)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode(vector.values, encoding)}
            for i, vector in enumerate(result.vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": result.model,
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "cost": amount(event.cost),
            },
        }


def _encode(values: Any, encoding: str) -> list[float] | str:
    if encoding == "base64":  # what the openai SDK asks for by default: float32, little-endian
        return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()
    return list(values)
