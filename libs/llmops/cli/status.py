"""`llmops status`: every component's health (each NATS node and replica of a cluster)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import click

from llmops.grpcutil import LIVENESS, check_health
from llmops.settings import CommonSettings

from .cluster import ONE_WRITER
from .guardrails import _print_rows
from .platform import SERVICES, PlatformState, nats_ready, triton_ready

# A one-writer replica without the lease answers liveness only: waiting, not broken.
_OK = ("ready", "standby")


async def run_status(settings: CommonSettings, as_json: bool) -> int:
    state = PlatformState.read(settings.data_dir)
    running = state is not None and state.alive()
    checks: dict[str, tuple[str, Awaitable[str]]] = {}
    for name, address in _components(settings, state).items():
        if name.startswith("nats"):
            checks[name] = (address, _up(nats_ready(address)))
        else:
            checks[name] = (address, _service_state(name, address))
    if state is None or state.triton_grpc:
        checks["triton"] = (settings.triton_grpc_addr, _up(triton_ready(settings.triton_http_port)))
    found = await asyncio.gather(*(check for _, check in checks.values()))
    results = {
        name: (addr, st) for (name, (addr, _)), st in zip(checks.items(), found, strict=True)
    }
    writers = {_service(n) for n, (_, st) in results.items() if st == "ready"}
    for name, (addr, st) in results.items():
        if st == "standby" and _service(name) not in writers:
            results[name] = (addr, "down")  # standing by for a writer that is not there
    pids = state.pids if state else {}
    all_ok = all(st in _OK for _, st in results.values())
    if as_json:
        components = {
            n: {"address": a, "ready": st == "ready", "state": st, "pid": pids.get(n)}
            for n, (a, st) in results.items()
        }
        click.echo(json.dumps({"supervisor": running, "ready": all_ok, "components": components}))
    else:
        if not running:
            click.echo("no supervisor running", err=True)
        _print_rows(
            ("component", "address", "pid", "state"),
            [(n, a, str(pids.get(n) or "-"), st) for n, (a, st) in results.items()],
        )
    return 0 if all_ok else 1


def _components(settings: CommonSettings, state: PlatformState | None) -> dict[str, str]:
    """Every process to check: from the running platform, else the configured addresses."""
    if state is not None and state.components:
        return {n: a for n, a in state.components.items() if n != "triton"}
    grpc = {**settings.service_addrs, **(state.grpc if state else {})}
    return {
        "nats": state.nats_url if state else settings.nats_url,
        **{n: grpc[n] for n in SERVICES},
    }


async def _up(check: Awaitable[bool]) -> str:
    return "ready" if await check else "down"


async def _service_state(name: str, address: str) -> str:
    if await check_health(address):
        return "ready"
    if _service(name) in ONE_WRITER and await check_health(address, service=LIVENESS):
        return "standby"
    return "down"


def _service(component: str) -> str:
    """`analytics-2` -> `analytics` (a replica's service)."""
    return component.rsplit("-", 1)[0]
