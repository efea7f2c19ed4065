"""`llmops up`: supervise the local platform until Ctrl-C or `llmops down`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

from llmops.settings import CommonSettings

from .cluster import NATS_NODES
from .localkey import ensure_local_key
from .platform import PlatformState, platform_specs
from .supervisor import StartupError, Supervisor


async def run_up(settings: CommonSettings, timeout_s: float, cluster: bool = False) -> int:
    plan = platform_specs(settings, cluster)
    state = PlatformState(
        supervisor_pid=os.getpid(),
        nats_url=plan.nats_url,
        grpc=plan.grpc,
        triton_grpc=settings.triton_grpc_addr if settings.triton_enabled else None,
        components=plan.components,
        http=plan.http,
    )
    data_dir = settings.data_dir.resolve()

    def record() -> None:
        state.pids = supervisor.pids()
        state.write(data_dir)

    supervisor = Supervisor(plan.specs, on_change=record)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    began = time.monotonic()
    try:
        starting = asyncio.create_task(supervisor.start(plan.groups, timeout_s))
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done:
            starting.result()  # raises StartupError
            await ensure_local_key(plan.nats_url, data_dir)
            state.ready = True
            record()
            _banner(settings, state, time.monotonic() - began, supervisor.ready_s)
            await stop.wait()
        else:
            starting.cancel()
    except StartupError as exc:
        _say(f"start-up failed: {exc}")
        code = 1
    finally:
        _say("stopping...")
        await supervisor.stop()
        (data_dir / "platform.json").unlink(missing_ok=True)
        _say("stopped")
    return code


def _banner(
    settings: CommonSettings, state: PlatformState, took_s: float, ready_s: dict[str, float]
) -> None:
    def ready(name: str) -> str:
        return f", ready in {ready_s[name]:.1f} s" if name in ready_s else ""

    lines = ["", f"llmops is up in {took_s:.1f} s"]
    for name, address in state.components.items():
        if name.startswith("nats"):
            label = name.replace("nats", "NATS", 1)
            lines.append(f"  {label:<13} {address} (JetStream{ready(name)})")
        else:
            lines.append(f"  {name:<13} {address} (gRPC{ready(name)})")
        if name in ("nats", f"nats-{NATS_NODES}") and state.triton_grpc:
            lines.append(f"  {'Triton':<13} {state.triton_grpc} (gRPC{ready('triton')})")
    lines += [
        f"  {'NATS monitor':<13} http://127.0.0.1:{settings.nats_monitor_port}",
        *(f"  {'OpenAI API':<13} http://{a}/v1" for a in state.http),
        f"  {'API key':<13} {settings.data_dir.resolve() / 'api-key'} (tenant default)",
        f"  {'data':<13} {settings.data_dir.resolve()}",
        "",
        "Try:",
        "  llmops ingest README.md --wait",
        '  llmops search "how do I run the tests?"',
        '  llmops chat "how do I run the tests?"',
        '  llmops sql "SELECT model_used, count() FROM interactions GROUP BY model_used"',
        "  llmops status",
        "Stop with Ctrl-C or `llmops down`.",
        "",
    ]
    for line in lines:
        _say(line)


def _say(text: str) -> None:
    sys.stdout.write(f"{'llmops':<10}| {text}\n")
    sys.stdout.flush()
