"""Model prices as versioned config, and the exact cost of a request.

A price entry applies from its `effective_from` on; a change is a new entry,
so what a past request cost never changes (a table refuses to rewrite an
entry that already applies). Figures are Decimals written as people write
them ("0.15" per million tokens), and a cost is an int of billionths of the
currency, rounded once at the end: sums over millions of requests stay
exact. A model with no entry gets None, never a silent $0: the metering
service flags such requests as unpriced.

Self-hosted (Triton) models are priced per GPU-second, per token, or both.
Not modelled: Anthropic cache writes (1.25x input), and long-context tiers
(Gemini Pro above 200k prompt tokens): both are priced as plain input.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

LITELLM_SOURCE = "LiteLLM model_prices_and_context_window.json"
LITELLM_MODES = frozenset({"chat", "completion", "responses", "embedding"})
_MTOK = 1_000_000
_NANOS = 1_000_000_000
_JSON_VERSION = 1


class PriceError(ValueError):
    """A price entry, file or change that cannot be accepted."""


def _exact(value: Any) -> Any:
    """A float as its shortest repr (0.15, not 0.1499999...); anything else as is."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


class Price(BaseModel):
    """One model's prices from `effective_from` on (per 1,000,000 tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "<provider>/<model>" as the platform names the target that answered.
    model: str = Field(pattern=r"^[^/\s]+/\S+$")
    # UTC, whole seconds; applies to requests that arrived at or after it.
    effective_from: datetime
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    input_per_mtok: Decimal = Field(Decimal(0), ge=0)
    output_per_mtok: Decimal = Field(Decimal(0), ge=0)
    cached_input_per_mtok: Decimal | None = Field(None, ge=0)  # None: same as input
    reasoning_per_mtok: Decimal | None = Field(None, ge=0)  # None: same as output
    gpu_second: Decimal | None = Field(None, ge=0)  # added to the token prices
    source: str = ""

    @field_validator(
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "reasoning_per_mtok",
        "gpu_second",
        mode="before",
    )
    @classmethod
    def _float_as_written(cls, value: Any) -> Any:
        return _exact(value)

    @field_validator("effective_from", mode="before")
    @classmethod
    def _date_is_midnight_utc(cls, value: Any) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return value

    @field_validator("effective_from")
    @classmethod
    def _utc_whole_seconds(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("effective_from must say its time zone (e.g. ...T00:00:00Z)")
        value = value.astimezone(UTC)
        if value.microsecond:  # rounded up: a price never applies earlier than asked
            value = value.replace(microsecond=0) + timedelta(seconds=1)
        return value

    @property
    def version(self) -> str:
        return f"{self.model}@{self.effective_from:%Y-%m-%dT%H:%M:%SZ}"


@dataclass(frozen=True)
class TokenUsage:
    """What one request used, as OpenAI reports it (the parts are inside the totals)."""

    input_tokens: int  # all prompt tokens, cached ones included (prompt_tokens)
    output_tokens: int  # all completion tokens, reasoning ones included (completion_tokens)
    cached_input_tokens: int = 0  # part of input_tokens
    reasoning_tokens: int = 0  # part of output_tokens
    gpu_seconds: float = 0.0


def cost_nanos(price: Price, usage: TokenUsage) -> int:
    """The request's cost in billionths of `price.currency`, exact, rounded half-up once.

    Parts reported larger than their totals are capped at the totals, and
    negative counts count as 0: a provider's odd usage never yields a
    negative cost.
    """
    input_tokens = max(usage.input_tokens, 0)
    output_tokens = max(usage.output_tokens, 0)
    cached = min(max(usage.cached_input_tokens, 0), input_tokens)
    reasoning = min(max(usage.reasoning_tokens, 0), output_tokens)
    cached_price = price.cached_input_per_mtok
    if cached_price is None:
        cached_price = price.input_per_mtok
    reasoning_price = price.reasoning_per_mtok
    if reasoning_price is None:
        reasoning_price = price.output_per_mtok
    with localcontext() as ctx:
        ctx.prec = 60  # every product and sum below is exact at this precision
        per_mtok = (
            (input_tokens - cached) * price.input_per_mtok
            + cached * cached_price
            + (output_tokens - reasoning) * price.output_per_mtok
            + reasoning * reasoning_price
        )
        nanos = per_mtok * (_NANOS // _MTOK)
        if price.gpu_second is not None and usage.gpu_seconds > 0:
            nanos += Decimal(repr(usage.gpu_seconds)) * price.gpu_second * _NANOS
        return int(nanos.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class PriceTable:
    """Every model's price history; looks up the entry that applied at a time."""

    def __init__(self, prices: Iterable[Price]) -> None:
        by_model: dict[str, dict[datetime, Price]] = {}
        for price in prices:
            entries = by_model.setdefault(price.model, {})
            if price.effective_from in entries:
                raise PriceError(f"two entries for {price.version}")
            entries[price.effective_from] = price
        # Per model: effective times (for bisect) and entries, in the same order.
        self._index: dict[str, tuple[list[datetime], list[Price]]] = {}
        for model, entries in by_model.items():
            times = sorted(entries)
            self._index[model] = (times, [entries[t] for t in times])

    def price_for(self, model: str, at: datetime) -> Price | None:
        """The entry that applied to a request for `model` arriving at `at`; None: unpriced."""
        found = self._index.get(model)
        if found is None:
            return None
        if at.tzinfo is None:
            raise PriceError("price_for needs a time-zone-aware time")
        times, entries = found
        i = bisect.bisect_right(times, at)
        return entries[i - 1] if i else None

    def with_prices(self, new: Iterable[Price], *, now: datetime | None = None) -> PriceTable:
        """A new table with `new` added; refuses any change to what already applied.

        An entry identical to an existing one is a no-op (reloading a file is
        harmless). An entry for an existing model and time replaces it only
        while that time is still ahead (>= now). A new entry for a model the
        table already prices must not start in the past either: it would
        reprice requests already metered. A model new to the table may start
        in the past (its requests were flagged unpriced, not priced).
        """
        now = now or datetime.now(UTC)
        merged = {(p.model, p.effective_from): p for p in self.entries()}
        for price in new:
            key = (price.model, price.effective_from)
            old = merged.get(key)
            if old == price:
                continue
            if price.model in self._index and price.effective_from < now:
                what = "replace" if old is not None else "add a backdated entry"
                raise PriceError(
                    f"would rewrite history: {price.version} is in the past; "
                    f"cannot {what} for a priced model (give it an effective_from >= now)"
                )
            merged[key] = price
        return PriceTable(merged.values())

    def entries(self) -> list[Price]:
        """All entries, sorted by model, then effective_from."""
        return [p for model in sorted(self._index) for p in self._index[model][1]]

    def models(self) -> list[str]:
        return sorted(self._index)

    def __len__(self) -> int:
        return sum(len(entries) for _, entries in self._index.values())

    def __iter__(self) -> Iterator[Price]:
        return iter(self.entries())

    def to_json(self) -> bytes:
        """Compact JSON (a NATS KV value); Decimals as strings, so they round-trip exactly."""
        rows = [p.model_dump(mode="json", exclude_defaults=True) for p in self.entries()]
        doc = {"v": _JSON_VERSION, "prices": rows}
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PriceTable:
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise PriceError(f"price table is not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("v") != _JSON_VERSION:
            raise PriceError(f"not a version {_JSON_VERSION} price table")
        rows = doc.get("prices")
        if not isinstance(rows, list):
            raise PriceError("price table has no 'prices' list")
        return cls(_validate(row, f"prices[{i}]") for i, row in enumerate(rows))


def _validate(row: Any, where: str) -> Price:
    if not isinstance(row, Mapping):
        raise PriceError(f"{where}: not a mapping")
    try:
        return Price.model_validate(row)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'entry'}: {err['msg']}" for err in e.errors()
        )
        raise PriceError(f"{where} ({row.get('model', '?')}): {problems}") from None


def load_price_file(path: Path) -> list[Price]:
    """The entries of a price file (deploy/metering/prices.yaml's format).

    Top level: `as_of` (the date the figures were checked), `source`,
    `currency` and `prices`; an entry without its own `source` gets the file's,
    with the date, so every metered cost can say where its price came from.
    """
    import yaml  # only the CLI and the metering service read files

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PriceError(f"{path}: cannot read: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("prices"), list):
        raise PriceError(f"{path}: expected a mapping with a 'prices' list")
    unknown = set(doc) - {"as_of", "source", "currency", "prices"}
    if unknown:
        raise PriceError(f"{path}: unknown top-level keys {sorted(unknown)}")
    source = str(doc.get("source", ""))
    if doc.get("as_of") is not None and source:
        source = f"{source}, as of {doc['as_of']}"
    defaults = {"currency": doc.get("currency", "USD"), "source": source}
    prices: list[Price] = []
    seen: set[tuple[str, datetime]] = set()
    for i, row in enumerate(doc["prices"]):
        if not isinstance(row, dict):
            raise PriceError(f"{path}: prices[{i}]: not a mapping")
        price = _validate({**defaults, **row}, f"{path}: prices[{i}]")
        if (price.model, price.effective_from) in seen:
            raise PriceError(f"{path}: prices[{i}]: a second entry for {price.version}")
        seen.add((price.model, price.effective_from))
        prices.append(price)
    return prices


class LiteLLMPrices(list[Price]):
    """The prices of a LiteLLM import: a list of Price, plus what was skipped and why."""

    def __init__(self, prices: Iterable[Price] = (), skipped: Mapping[str, str] | None = None):
        super().__init__(prices)
        self.skipped: dict[str, str] = dict(skipped or {})  # LiteLLM key -> reason


def _per_mtok(value: Any) -> Decimal:
    """A LiteLLM per-token cost as a per-million Decimal, as a person would write it."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    try:
        per_token = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not per_token.is_finite() or per_token < 0:
        raise ValueError(f"not a price: {value!r}")
    with localcontext() as ctx:
        ctx.prec = 60
        result = (per_token * _MTOK).normalize()
    return result.quantize(Decimal(1)) if result == result.to_integral_value() else result


def from_litellm(
    data: Mapping[str, Any], effective_from: datetime, source: str = LITELLM_SOURCE
) -> LiteLLMPrices:
    """Prices from LiteLLM's model_prices_and_context_window.json, all from `effective_from`.

    Kept: modes chat, completion, responses and embedding with both input
    and output per-token costs. The model is "<litellm_provider>/<key>"
    unless the key already starts with the provider. Everything else lands in
    `.skipped` (except "sample_spec", the schema's own example).
    """
    prices = LiteLLMPrices()
    seen: dict[str, str] = {}
    for key, spec in data.items():
        if key == "sample_spec":
            continue
        reason = _litellm_skip_reason(spec)
        if reason:
            prices.skipped[key] = reason
            continue
        provider = str(spec["litellm_provider"])
        model = key if key.startswith(f"{provider}/") else f"{provider}/{key}"
        if model in seen:
            prices.skipped[key] = f"same model as {seen[model]!r}"
            continue
        fields: dict[str, Any] = {
            "model": model,
            "effective_from": effective_from,
            "source": source,
        }
        try:
            fields["input_per_mtok"] = _per_mtok(spec["input_cost_per_token"])
            fields["output_per_mtok"] = _per_mtok(spec["output_cost_per_token"])
            if spec.get("cache_read_input_token_cost") is not None:
                fields["cached_input_per_mtok"] = _per_mtok(spec["cache_read_input_token_cost"])
            if spec.get("output_cost_per_reasoning_token") is not None:
                fields["reasoning_per_mtok"] = _per_mtok(spec["output_cost_per_reasoning_token"])
            price = Price.model_validate(fields)
        except (ValueError, ValidationError) as e:
            prices.skipped[key] = f"bad entry: {e}".splitlines()[0]
            continue
        seen[model] = key
        prices.append(price)
    return prices


def _litellm_skip_reason(spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return "not a mapping"
    if spec.get("mode") not in LITELLM_MODES:
        return f"mode {spec.get('mode')!r}"
    if not spec.get("litellm_provider"):
        return "no litellm_provider"
    if spec.get("input_cost_per_token") is None or spec.get("output_cost_per_token") is None:
        return "no per-token input and output costs"
    return ""
