"""When the retrieval service optimises its Qdrant Edge shard."""

from __future__ import annotations

import asyncio
from pathlib import Path

from retrieval.maintenance import IdleOptimizer
from retrieval.store import EdgeStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CountingStore(EdgeStore):
    """A real Edge store that counts optimise runs."""

    runs = 0

    def optimize(self) -> None:
        super().optimize()
        self.runs += 1


def test_optimises_only_after_enough_changes_and_a_quiet_period(tmp_path: Path) -> None:
    store, clock = CountingStore(tmp_path / "shard"), Clock()
    optimizer = IdleOptimizer(lambda: store, min_changes=100, idle_s=5.0, clock=clock)
    optimizer.note_changes(60)
    clock.now = 60.0
    assert not optimizer.due()  # quiet, but too few changes
    optimizer.note_changes(60)
    clock.now += 1.0
    assert not optimizer.due()  # enough changes, still busy
    clock.now += 5.0
    assert optimizer.due()
    optimizer.optimize()
    assert store.runs == 1 and not optimizer.due()  # the count starts again
    store.close()


async def test_the_background_loop_optimises_when_due(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "shard")
    optimizer = IdleOptimizer(lambda: store, min_changes=1, idle_s=0.1)
    task = asyncio.create_task(optimizer.run())
    optimizer.note_changes(5)
    await asyncio.sleep(0.5)
    assert store.runs == 1
    await asyncio.sleep(0.3)
    assert store.runs == 1  # nothing changed since
    task.cancel()
    store.close()
