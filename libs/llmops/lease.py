"""One writer among replicas: a lease held in NATS KV and renewed with compare-and-set.

Some work must have one writer at a time even when two replicas are alive
(analytics' inserts and its rollup repair; see docs/deploy.md). Each replica
asks for the lease; one gets it, the others wait as hot standbys. The holder
renews it every `LEASE_TTL_S / 4`; the bucket's `max_age` removes a lease
nobody renews, so a standby takes over `LEASE_TTL_S` after its holder died or
froze (a clean stop releases it at once).

Fencing without a token in the store: the holder trusts its lease only until
`LEASE_TTL_S` after it *sent* the last renewal that succeeded (the server stored it
later, so it expires later), minus a margin for clock rate. A holder that was
paused (SIGSTOP, a long GC, a frozen VM) sees that on waking and stops
writing before its next write, without asking anyone. A renewal that finds
another holder's revision, or a lapsed lease, calls `on_lost` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from llmops.bus.topology import LEASE_TTL_S, LEASES_BUCKET
from llmops.logging import get_logger

log = get_logger(__name__)
_MARGIN = 0.8  # the share of LEASE_TTL_S a holder trusts its lease after a renewal was sent


def holder_id() -> str:
    """Who holds a lease: the host (a pod's name) and the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


class WriterLease:
    def __init__(
        self,
        name: str,
        on_lost: Callable[[], None],
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.holder = holder or holder_id()
        self._ttl_s = LEASE_TTL_S
        self._on_lost = on_lost
        self._clock = clock
        self._kv: KeyValue | None = None
        self._revision = 0
        self._valid_until = 0.0
        self._renewing: asyncio.Task[None] | None = None

    def held(self) -> bool:
        """True while this process may write: checked before every write."""
        return self._clock() < self._valid_until

    async def acquire(self, js: JetStreamContext) -> None:
        """Wait until this process holds the lease (a standby waits here), then keep it."""
        waiting = False
        while True:
            sent = self._clock()
            try:
                self._kv = self._kv or await js.key_value(LEASES_BUCKET)
                self._revision = await self._kv.create(self.name, self.holder.encode())
                break
            except KeyWrongLastSequenceError:
                if not waiting:
                    log.info("lease.standby", lease=self.name, holder=await self._current())
                    waiting = True
            except Exception as exc:  # NATS unreachable or electing: a create that landed
                # unseen is a lease nobody renews, gone after its TTL
                log.warning("lease.unreachable", lease=self.name, error=repr(exc))
            await asyncio.sleep(self._ttl_s / 8)
        self._valid_until = sent + self._ttl_s * _MARGIN
        log.info("lease.acquired", lease=self.name, holder=self.holder)
        self._renewing = asyncio.create_task(self._renew())

    async def release(self) -> None:
        """Give the lease up at a clean stop, so a standby takes over at once."""
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        if self._kv is not None and self.held():
            self._valid_until = 0.0
            with contextlib.suppress(Exception):
                await self._kv.delete(self.name, last=self._revision)
                log.info("lease.released", lease=self.name)

    async def _current(self) -> str:
        assert self._kv is not None
        try:
            entry = await self._kv.get(self.name)
        except Exception:  # gone meanwhile, or NATS unreachable: only for the log
            return "-"
        return (entry.value or b"").decode(errors="replace")

    async def _renew(self) -> None:
        assert self._kv is not None
        while True:
            await asyncio.sleep(self._ttl_s / 4)
            sent = self._clock()
            if not self.held():  # paused past the lease: a standby may hold it now
                return self._lose("lapsed")
            try:
                self._revision = await self._kv.update(
                    self.name, self.holder.encode(), last=self._revision
                )
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                return self._lose("taken")
            except Exception as exc:  # NATS unreachable: keep trying while the lease lasts
                log.warning("lease.renew_failed", lease=self.name, error=str(exc))
                continue
            self._valid_until = sent + self._ttl_s * _MARGIN

    def _lose(self, why: str) -> None:
        self._valid_until = 0.0
        log.error("lease.lost", lease=self.name, why=why)
        self._on_lost()
