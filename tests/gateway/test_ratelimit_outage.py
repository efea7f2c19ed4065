"""Rate limits while NATS is unreachable: each replica admits its share, not everyone, not no one.

Two limiters (two gateway replicas) on a real nats-server's KV bucket take
part of a minute's limit; then their NATS goes away. Between them they admit
no more than the limit in that window, and both keep admitting until their
share is used.
"""

from __future__ import annotations

from pathlib import Path

import nats

from gateway.ratelimit import Quota, RateLimiter
from llmops.apikeys import Limits
from llmops.bus.topology import RATE_LIMITS_BUCKET, ensure_topology
from tests.support import nats_server

LIMIT = 100
NOW = 1_800_000_000.0 + 5  # five seconds into a window: no window boundary mid-test


async def test_without_nats_replicas_admit_their_share_and_no_more(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as url:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_topology(js)
        kv = await js.key_value(RATE_LIMITS_BUCKET)
        replicas = [RateLimiter(kv, replicas=2, clock=lambda: NOW) for _ in range(2)]
        quota = Quota("key-outage", "API key key-outage", Limits(requests_per_minute=LIMIT))
        before = [await replicas[0].admit(quota) for _ in range(30)]
        assert all(r is None for r in before)  # leased from the shared count
        await nc.close()  # NATS unreachable from here on

        during = [[await r.admit(quota) for _ in range(LIMIT)] for r in replicas]
    admitted = [sum(x is None for x in d) for d in during]
    # Each replica's share is 50 for the window: replica 0 had used 30 of it (leased),
    # replica 1 none.
    assert admitted == [LIMIT // 2 - 30, LIMIT // 2], admitted
    assert 30 + sum(admitted) <= LIMIT
    refusal = next(x for x in during[1] if x is not None)
    assert "share of its 100 requests per minute" in refusal.message
    assert 0 < refusal.retry_after_s <= 60
