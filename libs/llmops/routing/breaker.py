"""A circuit breaker per target: stop calling an upstream that keeps failing, probe it later.

Closed: calls go through; `failures` failed attempts in a row open it. Open:
calls are refused at once (the target is skipped with "circuit open") until
`cooldown_s` has passed. Then half-open: one call goes through as a probe
(others are still refused); its success closes the breaker, its failure opens
it for another cool-down. A call that ends with neither (the client went
away) gives the probe slot back. Single-threaded (asyncio): no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = State.CLOSED
        self.consecutive = 0
        self._opened_at = 0.0
        self._probing = False

    def refusal(self) -> str | None:
        """None if a call may go through now (and takes the probe slot when half-open),
        else why not: "circuit open ..."."""
        if self.state is State.OPEN:
            left = self._opened_at + self.cooldown_s - self._clock()
            if left > 0:
                return (
                    f"circuit open after {self.consecutive} consecutive failures "
                    f"(next probe in {left:.1f}s)"
                )
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN:
            if self._probing:
                return "circuit open (half-open: a probe request is in flight)"
            self._probing = True
        return None

    def success(self) -> None:
        self.state = State.CLOSED
        self.consecutive = 0
        self._probing = False

    def failure(self) -> None:
        self.consecutive += 1
        self._probing = False
        if self.state is State.HALF_OPEN or self.consecutive >= self.failures:
            self.state = State.OPEN
            self._opened_at = self._clock()

    def release(self) -> None:
        """The call ended without a verdict: a half-open probe slot is free again."""
        self._probing = False


class Breakers:
    """One breaker per target key, made on first use with that target's settings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, key: str, failures: int, cooldown_s: float) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(failures, cooldown_s, self._clock)
        return breaker
