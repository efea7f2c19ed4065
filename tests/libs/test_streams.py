"""in_batches: order kept, pieces merged only when the consumer lags, errors and closing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from llmops.streams import in_batches


async def numbers(count: int, gap_s: float = 0.0, fail_at: int | None = None) -> AsyncIterator[int]:
    for i in range(count):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        yield i
        await asyncio.sleep(gap_s)


async def test_a_fast_consumer_gets_each_piece_alone() -> None:
    batches = [b async for b in in_batches(numbers(5, gap_s=0.01))]
    assert batches == [[0], [1], [2], [3], [4]]


async def test_a_slow_consumer_gets_what_piled_up_in_one_batch() -> None:
    batches = []
    async for batch in in_batches(numbers(20)):
        batches.append(batch)
        await asyncio.sleep(0.01)  # sending the batch takes a while
    assert [i for b in batches for i in b] == list(range(20))
    assert len(batches) < 20


async def test_a_failure_comes_after_the_items_before_it() -> None:
    seen: list[int] = []
    with pytest.raises(ValueError, match="failed at 3"):
        async for batch in in_batches(numbers(10, fail_at=3)):
            seen.extend(batch)
            await asyncio.sleep(0.01)
    assert seen == [0, 1, 2]


async def test_closing_early_closes_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    batches = in_batches(endless())
    async with contextlib.aclosing(batches):
        async for _ in batches:
            break
    await asyncio.wait_for(closed.wait(), 1)
