"""The local platform: which processes `llmops up` runs, and the state file other commands read.

`<data dir>/platform.json` records the supervisor's pid, every component's
address and pid; `llmops down`, `status`, `ingest` and `search` find the
running platform through it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops.grpcutil import LIVENESS, check_health
from llmops.natsserver import NatsServerConfig
from llmops.processes import process_alive
from llmops.settings import CommonSettings, port_of
from llmops.triton import TritonRuntime, install_model_env, install_runtime, wait_ready

from .cluster import NATS_NODES, ONE_WRITER, REPLICAS, Replica, cluster_layout, host_port
from .supervisor import Probe, ProcessSpec

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
    components: dict[str, str] = field(default_factory=dict)  # process -> address
    http: list[str] = field(default_factory=list)  # each gateway's OpenAI-compatible API
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


async def nats_ready(url: str) -> bool:
    """NATS accepts connections."""
    host, port = host_port(url)
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


@dataclass
class PlatformPlan:
    """The processes `llmops up` runs, the groups it starts them in, and their addresses."""

    specs: list[ProcessSpec]
    groups: list[list[str]]
    nats_url: str
    grpc: dict[str, str]  # service -> its address (replicas comma separated)
    components: dict[str, str]  # process name -> its address (a NATS node: its URL)
    http: list[str]  # each gateway's OpenAI-compatible API, host:port


def platform_specs(settings: CommonSettings, cluster: bool = False) -> PlatformPlan:
    """Every process of the local platform (one of each, or a `cluster`), and its groups."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = service_env(settings)
    if cluster:
        layout = cluster_layout(settings, SERVICES, os.environ)
        nats_nodes = layout.nats
        nats_url = layout.nats_url
        grpc = layout.addresses()
        env.update(
            LLMOPS_NATS_URL=nats_url,
            LLMOPS_JS_REPLICAS=str(NATS_NODES),
            LLMOPS_GATEWAY_REPLICAS=str(REPLICAS),
            **layout.address_book(),
        )
        replicas = [r for rs in layout.replicas.values() for r in rs]
    else:
        host, port = host_port(settings.nats_url)
        nats_url = settings.nats_url
        nats_nodes = [
            (
                "nats",
                NatsServerConfig(
                    port=port,
                    http_port=settings.nats_monitor_port,
                    store_dir=settings.nats_store_dir,
                    host=host,
                ),
            )
        ]
        grpc = dict(settings.service_addrs)
        replicas = [Replica(name, 0, grpc[name], {}) for name in SERVICES]
    specs = []
    components = {}
    for name, config in nats_nodes:
        conf = data_dir / f"{name}.conf"
        conf.write_text(config.render())
        url = f"nats://{config.host}:{config.port}"
        components[name] = url
        specs.append(
            ProcessSpec(
                name,
                config.command(conf),
                dict(os.environ),
                lambda port=config.http_port: jetstream_ready(port),  # type: ignore[misc]
            )
        )
    groups = [[name for name, _ in nats_nodes]]
    services = []
    if settings.triton_enabled:
        runtime = install_runtime(settings.triton_dir)
        for config_file in sorted(settings.triton_model_repository.glob("*/config.pbtxt")):
            install_model_env(config_file.parent / "python_env")  # no-op once built by make setup
        specs.append(triton_spec(runtime, settings))
        services.append("triton")
    for replica in replicas:
        name = replica.name
        components[name] = replica.address
        siblings = [
            r.address for r in replicas if r.service == replica.service and r is not replica
        ]
        probe: Probe = (
            _standby_probe(replica.address, siblings)
            if replica.service in ONE_WRITER and siblings
            else functools.partial(check_health, replica.address)
        )
        specs.append(
            ProcessSpec(name, [sys.executable, "-m", replica.service], env | replica.env, probe)
        )
        services.append(name)
    groups.append(services)
    http = [
        (env | r.env).get("LLMOPS_GATEWAY_HTTP_ADDR", settings.gateway_http_addr)
        for r in replicas
        if r.service == "gateway"
    ]
    return PlatformPlan(specs, groups, nats_url, grpc, components, http)


def _standby_probe(address: str, siblings: list[str]) -> Probe:
    """Ready, or alive while a sibling holds the one-writer lease (a standby)."""

    async def probe() -> bool:
        if await check_health(address):
            return True
        if not await check_health(address, service=LIVENESS):
            return False
        return any([await check_health(a) for a in siblings])

    return probe


async def jetstream_ready(monitor_port: int) -> bool:
    """The node answers `/healthz`: it accepts clients and its JetStream is current
    (in a cluster: it has a meta leader, so streams can be created)."""
    url = f"http://127.0.0.1:{monitor_port}/healthz"

    def get() -> bool:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)

    try:
        return await asyncio.to_thread(get)
    except OSError:
        return False


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
        stop_last=True,  # the services finish their calls to it first
    )
