"""A small process supervisor for the local platform (`llmops up`).

Starts each component as its own process, prefixes every line it prints with
its name, waits for each to report healthy, restarts a service that crashes
(with backoff), and stops everything in reverse order on Ctrl-C/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Probe = Callable[[], Awaitable[bool]]
_COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")
STABLE_S = 30.0  # a process that ran this long is restarted as if for the first time


@dataclass
class ProcessSpec:
    name: str
    command: list[str]
    env: dict[str, str]
    probe: Probe
    restart: bool = True  # restart when it exits on its own
    stop_timeout_s: float = 15.0
    stop_last: bool = False  # stopped after the rest of its start group (what they call)
    cwd: str | None = None


@dataclass
class ManagedProcess:
    spec: ProcessSpec
    color: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    pump: asyncio.Task[None] | None = None
    stopping: bool = False
    exits: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.spec.command,
            env=self.spec.env,
            cwd=self.spec.cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Ctrl-C reaches the supervisor only; it stops the children in order.
            start_new_session=True,
        )
        self.pump = asyncio.create_task(self._pump(self.process))

    async def _pump(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        prefix = (
            f"\x1b[{self.color}m{self.spec.name:<10}|\x1b[0m "
            if _tty()
            else f"{self.spec.name:<10}| "
        )
        while line := await process.stdout.readline():
            sys.stdout.write(prefix + line.decode(errors="replace"))
            sys.stdout.flush()

    async def stop(self) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.spec.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self.pump:
            await self.pump


def _tty() -> bool:
    return sys.stdout.isatty() and os.environ.get("NO_COLOR") is None


class StartupError(RuntimeError):
    """A component exited or did not become healthy during start-up."""


class Supervisor:
    def __init__(self, specs: list[ProcessSpec], on_change: Callable[[], None] | None = None):
        self.processes = [ManagedProcess(s, _COLORS[i % len(_COLORS)]) for i, s in enumerate(specs)]
        self._on_change = on_change or (lambda: None)
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._groups: list[list[str]] = []
        self.ready_s: dict[str, float] = {}  # seconds from its start until healthy

    def pids(self) -> dict[str, int | None]:
        return {p.spec.name: p.pid for p in self.processes}

    async def start(self, groups: list[list[str]], timeout_s: float = 180.0) -> None:
        """Start the named processes group by group; each group must be healthy before the next."""
        by_name = {p.spec.name: p for p in self.processes}
        self._groups = groups
        for group in groups:
            members = [by_name[n] for n in group]
            for p in members:
                await p.start()
                self._watchers.append(asyncio.create_task(self._watch(p)))
            self._on_change()
            await asyncio.gather(*(self._wait_healthy(p, timeout_s) for p in members))

    async def _wait_healthy(self, p: ManagedProcess, timeout_s: float) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        while not await p.spec.probe():
            if p.process and p.process.returncode is not None and not p.spec.restart:
                raise StartupError(f"{p.spec.name} exited with code {p.process.returncode}")
            if time.monotonic() > deadline:
                raise StartupError(f"{p.spec.name} not healthy after {timeout_s:.0f}s")
            await asyncio.sleep(0.05)
        self.ready_s[p.spec.name] = time.monotonic() - started

    async def _watch(self, p: ManagedProcess) -> None:
        """Restart a process that exits on its own, with exponential backoff (reset once it
        had run for STABLE_S: a restart long after the last one starts at 1 s again)."""
        while True:
            assert p.process is not None
            started = time.monotonic()
            code = await p.process.wait()
            if time.monotonic() - started > STABLE_S:
                p.restarts = 0
            if p.pump:
                await p.pump
            if p.stopping or self._stopping:
                return
            p.exits.append(code)
            if not p.spec.restart:
                _say(f"{p.spec.name} exited with code {code}")
                return
            delay = min(2.0 ** min(p.restarts, 5), 30.0)
            p.restarts += 1
            _say(f"{p.spec.name} exited with code {code}; restart #{p.restarts} in {delay:.0f}s")
            await asyncio.sleep(delay)
            if p.stopping or self._stopping:
                return
            await p.start()
            self._on_change()

    async def stop(self) -> None:
        """Stop group by group in reverse start order (services, then NATS, so they can
        drain), each group's members at once; a `stop_last` one after the rest of its group."""
        self._stopping = True
        by_name = {p.spec.name: p for p in self.processes}
        grouped = {name for group in self._groups for name in group}
        tiers = [[p for p in self.processes if p.spec.name not in grouped]]
        for group in reversed(self._groups):
            members = [by_name[n] for n in group]
            tiers.append([p for p in members if not p.spec.stop_last])
            tiers.append([p for p in members if p.spec.stop_last])
        for tier in tiers:
            await asyncio.gather(*(p.stop() for p in tier))
        for w in self._watchers:
            w.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def _say(text: str) -> None:
    sys.stdout.write(f"{'llmops':<10}| {text}\n")
    sys.stdout.flush()
