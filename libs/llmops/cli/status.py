"""`llmops status`: every component's health."""

from __future__ import annotations

import asyncio
import json

from rich.console import Console
from rich.table import Table

from llmops.grpcutil import check_health
from llmops.settings import CommonSettings

from .platform import SERVICES, PlatformState, nats_ready, triton_ready


async def run_status(settings: CommonSettings, as_json: bool) -> int:
    state = PlatformState.read(settings.data_dir)
    running = state is not None and state.alive()
    nats_url = state.nats_url if state else settings.nats_url
    grpc = {**settings.service_addrs, **(state.grpc if state else {})}
    checks: dict[str, tuple[str, asyncio.Future[bool] | asyncio.Task[bool]]] = {
        "nats": (nats_url, asyncio.ensure_future(nats_ready(nats_url))),
    }
    if state is None or state.triton_grpc:
        checks["triton"] = (
            settings.triton_grpc_addr,
            asyncio.ensure_future(triton_ready(settings.triton_http_port)),
        )
    for name in SERVICES:
        checks[name] = (grpc[name], asyncio.ensure_future(check_health(grpc[name])))
    results = {name: (addr, await fut) for name, (addr, fut) in checks.items()}
    pids = state.pids if state else {}
    all_ready = all(ok for _, ok in results.values())
    if as_json:
        print(
            json.dumps(
                {
                    "supervisor": running,
                    "ready": all_ready,
                    "components": {
                        n: {"address": a, "ready": ok, "pid": pids.get(n)}
                        for n, (a, ok) in results.items()
                    },
                }
            )
        )
    else:
        table = Table(title="llmops status" + ("" if running else " (no supervisor running)"))
        for col in ("component", "address", "pid", "state"):
            table.add_column(col)
        for name, (addr, ok) in results.items():
            table.add_row(
                name,
                addr,
                str(pids.get(name) or "-"),
                "[green]ready[/green]" if ok else "[red]down[/red]",
            )
        Console().print(table)
    return 0 if all_ready else 1
