"""The price table in NATS KV: seeded from the default file, extended by imports, never rewritten.

One value (`table` in `llmops_prices`) holds every version of every price;
a change is a compare-and-set, so two imports cannot lose each other's
entries. Gateways and metering follow it with a watch and price each request
from memory, at the request's own time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from llmops.bus.topology import PRICES_BUCKET
from llmops.kvmirror import KvMirror
from llmops.logging import get_logger
from llmops.pricing import Price, PriceTable, TokenUsage, cost_nanos, load_price_file
from llmops.v1 import inference_pb2, metering_pb2

log = get_logger(__name__)
TABLE_KEY = "table"


async def seed_prices(js: JetStreamContext, default_file: Path) -> None:
    """Put the default table in KV if there is none yet (an existing table is kept)."""
    kv = await js.key_value(PRICES_BUCKET)
    with contextlib.suppress(KeyNotFoundError):
        await kv.get(TABLE_KEY)
        return
    table = PriceTable(load_price_file(default_file))
    with contextlib.suppress(KeyWrongLastSequenceError):  # seeded meanwhile by another process
        await kv.create(TABLE_KEY, table.to_json())
        log.info("prices.seeded", file=str(default_file), entries=len(table))


async def add_prices(js: JetStreamContext, prices: Iterable[Price]) -> PriceTable:
    """Add entries to the table (PriceError if one would rewrite history)."""
    kv = await js.key_value(PRICES_BUCKET)
    new = list(prices)
    while True:
        try:
            entry = await kv.get(TABLE_KEY)
            current = PriceTable.from_json(entry.value or b"")
            updated = current.with_prices(new)
            await kv.update(TABLE_KEY, updated.to_json(), last=entry.revision)
            return updated
        except KeyNotFoundError:
            updated = PriceTable(new)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await kv.create(TABLE_KEY, updated.to_json())
                return updated
        except KeyWrongLastSequenceError:
            continue  # changed meanwhile: apply ours on top of it


def amount(cost: metering_pb2.Cost) -> float | None:
    """A cost in the currency's units, as OpenAI-style usage blocks report it; None: unpriced."""
    return cost.nanos / 1e9 if cost.priced else None


class PriceBook:
    """The current price table, followed by a KV watch."""

    def __init__(self) -> None:
        self._mirror = KvMirror(PRICES_BUCKET, PriceTable.from_json)
        self._empty = PriceTable(())

    @property
    def table(self) -> PriceTable:
        return self._mirror.get(TABLE_KEY) or self._empty

    async def start(self, js: JetStreamContext) -> None:
        await self._mirror.start(js)

    def cost(
        self, model: str, at: dt.datetime, usage: inference_pb2.Usage, gpu_seconds: float = 0.0
    ) -> metering_pb2.Cost:
        """What a request cost at its own time; `priced=False` when the model has no price."""
        price: Price | None = self.table.price_for(model, at) if model else None
        if price is None:
            return metering_pb2.Cost(priced=False, currency="USD")
        nanos = cost_nanos(
            price,
            TokenUsage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_input_tokens=usage.cached_input_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                gpu_seconds=gpu_seconds,
            ),
        )
        return metering_pb2.Cost(
            nanos=nanos, currency=price.currency, priced=True, price_version=price.version
        )

    async def stop(self) -> None:
        await self._mirror.stop()
