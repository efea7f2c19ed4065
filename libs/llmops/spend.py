"""Spend and budgets in NATS KV, shared by metering (writes spend) and gateways (read both).

Spend is counted per tenant and per API key, per UTC day and month, under
keys like `tenant.acme.day.2026-11-25` and `key.0123456789ab.month.2026-11`.
Each counter remembers which interactions (stream sequences) it took beyond
the consumer's ack floor — everything at or below the floor was acked, so
counted — so a redelivered interaction is never counted twice, even when
newer ones were counted first (after a crash); and the budget thresholds it
has alerted on, so an alert fires once per period.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
DEFAULT_ALERT_AT = (0.8,)


def period_start(period: Period, at: dt.datetime) -> str:
    """The UTC day (YYYY-MM-DD) or month (YYYY-MM) `at` falls in."""
    at = at.astimezone(dt.UTC)
    return at.strftime("%Y-%m-%d") if period == "day" else at.strftime("%Y-%m")


def period_end(period: Period, at: dt.datetime) -> dt.datetime:
    """When the period `at` falls in ends (the next period's first instant, UTC)."""
    at = at.astimezone(dt.UTC)
    day = dt.datetime(at.year, at.month, at.day, tzinfo=dt.UTC)
    if period == "day":
        return day + dt.timedelta(days=1)
    return dt.datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=dt.UTC)


def spend_key(tenant: str, key_id: str, period: Period, start: str) -> str:
    """A counter's KV key: a key's if `key_id` is set, else its tenant's."""
    scope = f"key.{key_id}" if key_id else f"tenant.{tenant}"
    return f"{scope}.{period}.{start}"


def budget_key(tenant: str, key_id: str = "") -> str:
    return f"key.{key_id}" if key_id else f"tenant.{tenant}"


class Spend(BaseModel):
    """One counter: a tenant's or a key's spend in one period."""

    tenant: str
    key_id: str = ""
    spend: dict[str, int] = Field(default_factory=dict)  # currency -> nanos
    requests: int = 0
    unpriced: int = 0  # requests whose model had no price (not in spend)
    input_tokens: int = 0
    output_tokens: int = 0
    applied: list[int] = Field(default_factory=list)  # sequences taken above the ack floor
    recent: list[str] = Field(default_factory=list)  # the last requests counted (request ids)
    dearest: int = 0  # the largest cost of one request (nanos): gateways' margin near a limit
    alerted: list[float] = Field(default_factory=list)  # thresholds already alerted
    unpriced_models: list[str] = Field(default_factory=list)


class Budget(BaseModel):
    """A tenant's or a key's spend limits (0 = none) and soft-alert fractions."""

    tenant: str
    key_id: str = ""
    currency: str = "USD"
    daily_limit_nanos: int = Field(0, ge=0)
    monthly_limit_nanos: int = Field(0, ge=0)
    alert_at: list[float] = Field(default_factory=lambda: list(DEFAULT_ALERT_AT))

    def limit(self, period: Period) -> int:
        return self.daily_limit_nanos if period == "day" else self.monthly_limit_nanos

    @property
    def key(self) -> str:
        return budget_key(self.tenant, self.key_id)

    @property
    def label(self) -> str:
        return f"key {self.key_id}" if self.key_id else f"tenant {self.tenant}"


RECENT_REQUESTS = 64  # how many counted request ids a counter shows (gateways wait on them)


def money(nanos: int, currency: str) -> str:
    """Nanos as a readable amount: 1234567 USD -> '$0.001235'."""
    amount = f"{nanos / 1e9:,.6f}".rstrip("0").rstrip(".")
    return f"${amount}" if currency == "USD" else f"{amount} {currency}"
