"""Where a request's time goes: each step's latency, and how much was spent waiting upstream.

The gateway's overhead is the total minus the upstream waits: what the
platform itself costs the caller (auth, limits, prompt, caching, marshalling).
"""

from __future__ import annotations

import time
from types import TracebackType

from llmops.v1 import gateway_pb2


class RequestTimer:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.upstream_s = 0.0
        self.first_token_s: float | None = None
        self._steps: dict[str, float] = {}

    def step(self, name: str, *, upstream: bool = False) -> _Step:
        """Time a step (`with timer.step(...)`); `upstream` steps count as waiting on another
        service."""
        return _Step(self, name, upstream)

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


class _Step:
    """A plain class, not @contextmanager: a request times several steps, and a generator
    per step costs more than the step's own work."""

    __slots__ = ("_began", "_name", "_timer", "_upstream")

    def __init__(self, timer: RequestTimer, name: str, upstream: bool) -> None:
        self._timer = timer
        self._name = name
        self._upstream = upstream
        self._began = 0.0

    def __enter__(self) -> None:
        self._began = time.perf_counter()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._timer.add(self._name, time.perf_counter() - self._began, upstream=self._upstream)
