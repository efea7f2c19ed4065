"""Bounded samples of sliding time windows: time buckets, each a bottom-k reservoir.

Time is cut into buckets of `width_s` (a window is a run of whole buckets, so
windows slide one bucket at a time). Each bucket keeps the `capacity` items with
the smallest keys, a key being a hash of the item's event id: the same items are
kept whatever order they arrive in, so a restart that replays the stream, or
another replica, holds exactly the same samples.

A window's sample takes from each bucket in proportion to the traffic it saw, as
far as its reservoir holds; what a bucket cannot give (a burst larger than its
capacity) is made up from the others, so the sample stays large at the cost of
under-weighting bursts. Each bucket's share is its smallest keys: a uniform
subset of what it saw.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Bucket(Generic[T]):
    seen: int = 0
    heap: list[tuple[float, int, T]] = field(default_factory=list)  # (-key, tiebreak, item)

    def smallest(self, keep: Callable[[T], bool]) -> list[T]:
        """The bucket's items that `keep` accepts, smallest key first."""
        return [item for _, _, item in sorted(self.heap, reverse=True) if keep(item)]


def _any(_: object) -> bool:
    return True


class TimeReservoir(Generic[T]):
    def __init__(self, width_s: float, capacity: int) -> None:
        self.width_s = width_s
        self.capacity = capacity
        self._buckets: dict[int, _Bucket[T]] = {}
        self._count = 0

    def bucket_of(self, at: float) -> int:
        return math.floor(at / self.width_s)

    def offer(self, at: float, key: float, item: T) -> tuple[bool, T | None]:
        """Count the item at time `at`; (whether it is kept, the item it pushed out)."""
        bucket = self._buckets.setdefault(self.bucket_of(at), _Bucket())
        bucket.seen += 1
        self._count += 1
        entry = (-key, self._count, item)
        if len(bucket.heap) < self.capacity:
            heapq.heappush(bucket.heap, entry)
            return True, None
        if -bucket.heap[0][0] <= key:
            return False, None
        _, _, evicted = heapq.heapreplace(bucket.heap, entry)
        return True, evicted

    def prune(self, first_kept: int) -> None:
        """Forget buckets before `first_kept` (out of every window now)."""
        for index in [i for i in self._buckets if i < first_kept]:
            del self._buckets[index]

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def sample(self, first: int, end: int, limit: int, keep: Callable[[T], bool] = _any) -> list[T]:
        """Up to `limit` items of buckets `first` <= i < `end` (see the module docstring)."""
        buckets = [b for i, b in sorted(self._buckets.items()) if first <= i < end]
        pools = [b.smallest(keep) for b in buckets]
        seen = sum(b.seen for b in buckets)
        if not seen:
            return []
        taken = [
            min(len(p), math.ceil(limit * b.seen / seen))
            for b, p in zip(buckets, pools, strict=True)
        ]
        short = limit - sum(taken)
        for i in sorted(range(len(pools)), key=lambda i: -buckets[i].seen):
            if short <= 0:
                break
            more = min(short, len(pools[i]) - taken[i])
            taken[i] += more
            short -= more
        chosen = [item for pool, k in zip(pools, taken, strict=True) for item in pool[:k]]
        return chosen[:limit]
