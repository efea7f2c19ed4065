"""Request and token limits per minute, per API key and per tenant, across gateway replicas.

The count of each key's (and tenant's) minute lives in NATS KV (`llmops_rate_limits`), updated
with compare-and-set so replicas never over-admit. A replica does not go to
NATS for every request: it leases a slice of the window (1/50th of the limit,
at least 1) and admits from the slice locally, so a hot key costs one KV round
trip per slice. Units a replica leased but did not use lapse with the window,
so the limit is never exceeded and at most one slice per replica goes unused.

Token limits are charged after the fact (a request's tokens are known only
when it ends): a request is refused once the window's tokens reached the limit.

NATS unreachable (or slower than `KV_TIMEOUT_S`): a replica neither refuses
everyone nor admits everyone. It keeps admitting from the slice it holds,
then up to its share of the limit (limit / `replicas`) counted locally for
the window, and refuses past that; token limits use the last count read plus
this replica's own charges. So while NATS is away the replicas admit at most
the limit between them when they share the load evenly, and never more than
twice the limit (a replica that had leased more than its share keeps it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from gateway.errors import GatewayError
from llmops.apikeys import KeyRecord, Limits, TenantRecord
from llmops.logging import get_logger

log = get_logger(__name__)
WINDOW_S = 60
_SLICES_PER_WINDOW = 50
_CAS_ATTEMPTS = 20
_TOKEN_READ_EVERY_S = 0.25
KV_TIMEOUT_S = 0.5  # a request waits no longer than this for the shared count
_ALONE_S = 1.0  # after a failure, requests are counted locally this long before NATS is retried


@dataclass(frozen=True)
class Quota:
    """One set of per-minute limits and the counter it is kept under."""

    counter: str  # KV key prefix: the key id, or tenant.<name>
    label: str  # for messages: "API key <id>", "tenant <name>"
    limits: Limits


def quotas_of(key: KeyRecord, tenant: TenantRecord) -> list[Quota]:
    """The limits a request of `key` counts against: its key's and its tenant's."""
    candidates = (
        Quota(key.key_id, f"API key {key.key_id}", key.limits),
        Quota(f"tenant.{tenant.tenant}", f"tenant {tenant.tenant}", tenant.limits),
    )
    return [q for q in candidates if q.limits.requests_per_minute or q.limits.tokens_per_minute]


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_s: float


@dataclass
class _Lease:
    window: int
    left: int = 0
    granted: int = 0  # leased from the shared count this window
    local: int = 0  # admitted without NATS this window (its share, counted here)
    exhausted: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _TokenView:
    window: int
    total: int = 0  # the shared count as last read, plus what this replica charged since
    read_at: float = 0.0


class RateLimiter:
    def __init__(
        self, kv: KeyValue, replicas: int = 1, clock: Callable[[], float] = time.time
    ) -> None:
        """`replicas`: the most gateway replicas at once (each one's share without NATS)."""
        self._kv = kv
        self._replicas = replicas
        self._clock = clock
        self._alone_until = 0.0
        self._leases: dict[str, _Lease] = {}
        self._tokens: dict[str, _TokenView] = {}

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        return int(now // WINDOW_S), WINDOW_S - (now % WINDOW_S)

    async def check(self, quotas: Sequence[Quota]) -> None:
        """Admit one request under every quota, or raise RESOURCE_EXHAUSTED with a retry hint."""
        for quota in quotas:
            refusal = await self.admit(quota)
            if refusal is not None:
                raise GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{refusal.message}; retry in {refusal.retry_after_s:.0f}s",
                    retry_after_s=refusal.retry_after_s,
                )

    async def admit(self, quota: Quota) -> Refusal | None:
        """None when one more request fits the quota now; else why not and when to retry."""
        limits = quota.limits
        if not (limits.requests_per_minute or limits.tokens_per_minute):
            return None
        window, retry_after = self._window()
        if self._clock() < self._alone_until:  # NATS failed a moment ago: don't wait again
            refused = self._admit_alone(quota, window)
        else:
            try:
                async with asyncio.timeout(KV_TIMEOUT_S):
                    refused = await self._admit_shared(quota, window)
            except Exception as exc:
                log.warning("ratelimit.unavailable", quota=quota.label, error=repr(exc))
                self._alone_until = self._clock() + _ALONE_S
                refused = self._admit_alone(quota, window)
        return Refusal(refused, retry_after) if refused else None

    async def _admit_shared(self, quota: Quota, window: int) -> str:
        """Why the shared count refuses one more request ("" = admitted)."""
        limits = quota.limits
        if limits.tokens_per_minute:
            used = await self._tokens_used(quota.counter, window)
            if used >= limits.tokens_per_minute:
                return f"{quota.label} used its {limits.tokens_per_minute} tokens per minute"
        if limits.requests_per_minute and not await self._take_request(
            quota.counter, window, limits.requests_per_minute
        ):
            return f"{quota.label} made its {limits.requests_per_minute} requests per minute"
        return ""

    def _admit_alone(self, quota: Quota, window: int) -> str:
        """Without NATS: the slice in hand, then this replica's share, counted here."""
        limits = quota.limits
        view = self._tokens.get(quota.counter)
        used = view.total if view is not None and view.window == window else 0
        if limits.tokens_per_minute and used >= limits.tokens_per_minute:
            return f"{quota.label} used its {limits.tokens_per_minute} tokens per minute"
        if not limits.requests_per_minute:
            return ""
        lease = self._lease(quota.counter, window)
        if lease.left > 0:
            lease.left -= 1
            return ""
        share = max(1, limits.requests_per_minute // self._replicas)
        if lease.granted + lease.local >= share:
            return (
                f"{quota.label} made this replica's share of its {limits.requests_per_minute} "
                "requests per minute (the shared count is unreachable)"
            )
        lease.local += 1
        return ""

    def _lease(self, counter: str, window: int) -> _Lease:
        lease = self._leases.get(counter)
        if lease is None or lease.window != window:
            lease = self._leases[counter] = _Lease(window)
        return lease

    async def charge_tokens(self, quotas: Sequence[Quota], tokens: int) -> None:
        """Add a finished request's tokens to the windows of the quotas that limit tokens."""
        window, _ = self._window()
        for quota in quotas:
            if not quota.limits.tokens_per_minute or tokens <= 0:
                continue
            try:
                await self._add(f"{quota.counter}.tok.{window}", tokens, limit=None)
            except Exception as exc:
                log.warning("ratelimit.charge_failed", quota=quota.label, error=str(exc))
                continue
            view = self._tokens.get(quota.counter)
            if view is not None and view.window == window:
                view.total += tokens

    async def _tokens_used(self, counter: str, window: int) -> int:
        view = self._tokens.get(counter)
        now = self._clock()
        if view is None or view.window != window or now - view.read_at > _TOKEN_READ_EVERY_S:
            total = await self._read(f"{counter}.tok.{window}")
            view = self._tokens[counter] = _TokenView(window, total, now)
        return view.total

    async def _take_request(self, counter: str, window: int, limit: int) -> bool:
        lease = self._lease(counter, window)
        async with lease.lock:  # one KV lease at a time per counter and replica
            if lease.left == 0 and not lease.exhausted:
                size = max(1, limit // _SLICES_PER_WINDOW)
                lease.left = await self._add(f"{counter}.req.{window}", size, limit=limit)
                lease.granted += lease.left
                lease.exhausted = lease.left == 0
            if lease.left == 0:
                return False
            lease.left -= 1
            return True

    async def _read(self, key: str) -> int:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return 0
        return int(entry.value or b"0")

    async def _add(self, key: str, amount: int, limit: int | None) -> int:
        """Add up to `amount` to the counter without passing `limit`; return what was added."""
        for _ in range(_CAS_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
                taken, revision = int(entry.value or b"0"), entry.revision
            except KeyNotFoundError:
                taken, revision = 0, None
            grant = amount if limit is None else max(0, min(amount, limit - taken))
            if grant == 0:
                return 0
            value = str(taken + grant).encode()
            try:
                if revision is None:
                    await self._kv.create(key, value)
                else:
                    await self._kv.update(key, value, last=revision)
                return grant
            except KeyWrongLastSequenceError:
                continue  # another replica moved it: read again
            except Exception as exc:
                if revision is None and "wrong last sequence" in str(exc).lower():
                    continue  # created by another replica meanwhile
                raise
        raise RuntimeError(f"rate-limit counter {key} kept changing under {_CAS_ATTEMPTS} tries")
