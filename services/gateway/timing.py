"""Where a request's time goes: each step's latency, and how much was spent waiting upstream.

The gateway's overhead is the total minus the upstream waits: what the
platform itself costs the caller (auth, limits, prompt, caching, marshalling).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from llmops.v1 import gateway_pb2


class RequestTimer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.upstream_s = 0.0
        self.first_token_s: float | None = None
        self._steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, *, upstream: bool = False) -> Iterator[None]:
        """Time a step; `upstream` steps count as waiting on another service."""
        began = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - began
            self._steps[name] = self._steps.get(name, 0.0) + elapsed
            if upstream:
                self.upstream_s += elapsed

    def add(self, name: str, seconds: float, *, upstream: bool = False) -> None:
        self._steps[name] = self._steps.get(name, 0.0) + seconds
        if upstream:
            self.upstream_s += seconds

    def waited(self, seconds: float) -> None:
        """Time spent waiting on upstreams that ran side by side (counted once, no step)."""
        self.upstream_s += seconds

    def mark_first_token(self) -> None:
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started

    @property
    def total_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def overhead_ms(self) -> float:
        return max(0.0, self.total_ms - self.upstream_s * 1000)

    @property
    def ttft_ms(self) -> float:
        return 0.0 if self.first_token_s is None else self.first_token_s * 1000

    def steps(self) -> list[gateway_pb2.StepTiming]:
        return [
            gateway_pb2.StepTiming(step=name, ms=round(seconds * 1000, 3))
            for name, seconds in self._steps.items()
        ]
