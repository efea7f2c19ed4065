"""The circuit breaker with the real clock and short cool-downs."""

from __future__ import annotations

import time

from llmops.routing.breaker import Breakers, CircuitBreaker, State

COOLDOWN_S = 0.3


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=3, cooldown_s=COOLDOWN_S)
    for _ in range(2):
        assert breaker.refusal() is None
        breaker.failure()
    assert breaker.refusal() is None
    breaker.success()  # not consecutive any more
    for _ in range(2):
        breaker.failure()
    assert breaker.state is State.CLOSED
    breaker.failure()
    assert breaker.state is State.OPEN
    refusal = breaker.refusal()
    assert refusal is not None and refusal.startswith("circuit open after 3 consecutive failures")


def test_half_open_lets_one_probe_through_after_the_cooldown_and_its_success_closes() -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=COOLDOWN_S)
    breaker.failure()
    opened = time.monotonic()
    while breaker.refusal() is not None:
        time.sleep(0.01)
    assert time.monotonic() - opened >= COOLDOWN_S * 0.9
    assert breaker.state is State.HALF_OPEN
    # The probe is in flight: everyone else is still refused.
    assert "a probe request is in flight" in (breaker.refusal() or "")
    breaker.success()
    assert breaker.state is State.CLOSED
    assert breaker.refusal() is None and breaker.refusal() is None


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    breaker = CircuitBreaker(failures=2, cooldown_s=COOLDOWN_S)
    breaker.failure()
    breaker.failure()
    time.sleep(COOLDOWN_S)
    assert breaker.refusal() is None  # the probe
    breaker.failure()  # one failure is enough in half-open
    assert breaker.state is State.OPEN
    assert (breaker.refusal() or "").startswith("circuit open")
    time.sleep(COOLDOWN_S)
    assert breaker.refusal() is None


def test_a_probe_without_verdict_gives_its_slot_back() -> None:
    breaker = CircuitBreaker(failures=1, cooldown_s=COOLDOWN_S)
    breaker.failure()
    time.sleep(COOLDOWN_S)
    assert breaker.refusal() is None
    breaker.release()  # the caller went away mid-probe
    assert breaker.refusal() is None  # the next caller probes


def test_one_breaker_per_target_key() -> None:
    breakers = Breakers()
    a = breakers.get("triton/a@h:1", 1, COOLDOWN_S)
    assert breakers.get("triton/a@h:1", 5, 60) is a
    assert breakers.get("triton/a@h:2", 1, COOLDOWN_S) is not a
