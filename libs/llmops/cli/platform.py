"""The local platform: which processes `llmops up` runs, and the state file other commands read.

`<data dir>/platform.json` records the supervisor's pid, every component's
address and pid; `llmops down`, `status`, `ingest` and `search` find the
running platform through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops.grpcutil import check_health
from llmops.natsserver import NatsServerConfig
from llmops.processes import process_alive
from llmops.settings import CommonSettings, port_of
from llmops.triton import TritonRuntime, install_model_env, install_runtime, wait_ready

from .supervisor import ProcessSpec

SERVICES = (
    "ingestion",
    "embedding",
    "retrieval",
    "inference",
    "guardrails",
    "evaluation",
    "gateway",
    "analytics",
    "metering",
)
STATE_FILE = "platform.json"


@dataclass
class PlatformState:
    supervisor_pid: int
    nats_url: str
    grpc: dict[str, str]  # service -> address
    triton_grpc: str | None
    pids: dict[str, int | None] = field(default_factory=dict)
    ready: bool = False
    started_at: float = field(default_factory=time.time)

    def write(self, data_dir: Path) -> None:
        path = data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)  # readers never see a half-written file

    @classmethod
    def read(cls, data_dir: Path) -> PlatformState | None:
        try:
            return cls(**json.loads((data_dir / STATE_FILE).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def alive(self) -> bool:
        return process_alive(self.supervisor_pid)


def _host_port(url: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 4222


async def nats_ready(url: str) -> bool:
    """NATS accepts connections."""
    host, port = _host_port(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def triton_ready(http_port: int) -> bool:
    """Triton reports every loaded model ready."""
    try:
        await wait_ready(f"http://127.0.0.1:{http_port}", timeout_s=0.5)
    except Exception:
        return False
    return True


def service_env(settings: CommonSettings) -> dict[str, str]:
    """The environment every child gets: absolute paths, so cwd never matters."""
    env = dict(os.environ)
    env.update(
        LLMOPS_DATA_DIR=str(settings.data_dir.resolve()),
        LLMOPS_MODELS_DIR=str(settings.models_dir.resolve()),
        LLMOPS_NATS_URL=settings.nats_url,
        LLMOPS_TRITON_GRPC_ADDR=settings.triton_grpc_addr,
        PYTHONUNBUFFERED="1",
    )
    env.update(
        {f"LLMOPS_{name.upper()}_ADDR": addr for name, addr in settings.service_addrs.items()}
    )
    return env


def platform_specs(settings: CommonSettings) -> tuple[list[ProcessSpec], list[list[str]]]:
    """Every process of the local platform, and the groups to start them in."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    host, port = _host_port(settings.nats_url)
    nats_url = settings.nats_url
    nats = NatsServerConfig(
        port=port,
        http_port=settings.nats_monitor_port,
        store_dir=settings.nats_store_dir,
        host=host,
    )
    conf = data_dir / "nats.conf"
    conf.write_text(nats.render())
    specs = [
        ProcessSpec("nats", nats.command(conf), dict(os.environ), lambda: nats_ready(nats_url)),
    ]
    groups = [["nats"]]
    env = service_env(settings)
    if settings.triton_enabled:
        runtime = install_runtime(settings.triton_dir)
        for config in sorted(settings.triton_model_repository.glob("*/config.pbtxt")):
            install_model_env(config.parent / "python_env")  # no-op once built by make setup
        specs.append(triton_spec(runtime, settings))
        groups.append(["triton", *SERVICES])
    else:
        groups.append(list(SERVICES))
    for name in SERVICES:
        addr = settings.service_addrs[name]
        specs.append(
            ProcessSpec(
                name,
                [sys.executable, "-m", name],
                env,
                lambda addr=addr: check_health(addr),  # type: ignore[misc]
            )
        )
    return specs, groups


def triton_spec(runtime: TritonRuntime, settings: CommonSettings) -> ProcessSpec:
    grpc_port = port_of(settings.triton_grpc_addr)
    return ProcessSpec(
        "triton",
        runtime.command(
            settings.triton_model_repository,
            grpc_port,
            settings.triton_http_port,
            settings.triton_metrics_port,
        ),
        runtime.env(),
        lambda: triton_ready(settings.triton_http_port),
        stop_timeout_s=20,
    )
