"""Helpers for tests that run real components: free ports, a real nats-server, `llmops up`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmops.grpcutil import channel, check_health
from llmops.natsserver import NatsServerConfig
from llmops.settings import nats_servers

ROOT = Path(__file__).resolve().parent.parent
LLMOPS = str(Path(sys.executable).parent / "llmops")


def _ports_below_ephemeral() -> range:
    """Ports under the kernel's ephemeral range: no client connection's local port can take one."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


_PORTS = _ports_below_ephemeral()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never handed out twice by this test process.

    The kernel's `bind(0)` hands out ephemeral ports, which outgoing connections also use,
    and may hand the same one out again once its socket is closed: a platform's twenty
    ports chosen that way once collided (a nats-server could never bind its own).
    """
    for _ in range(10_000):
        port = random.choice(_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {_PORTS}")


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def nats_server(store_dir: Path, port: int | None = None) -> Iterator[str]:
    """A real nats-server with JetStream in `store_dir`; yields its URL."""
    cfg = NatsServerConfig(port=port or free_port(), http_port=free_port(), store_dir=store_dir)
    conf = store_dir.parent / f"nats-{cfg.port}.conf"
    store_dir.mkdir(parents=True, exist_ok=True)
    conf.write_text(cfg.render())
    log = (store_dir.parent / f"nats-{cfg.port}.log").open("wb")
    proc = subprocess.Popen(cfg.command(conf), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(cfg.port)
        yield f"nats://127.0.0.1:{cfg.port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# What a second gateway of a platform must not share with the first: its addresses.
_GATEWAY_ADDRESSES = (
    "LLMOPS_GATEWAY_ADDR",
    "LLMOPS_GATEWAY_HTTP_ADDR",
    "LLMOPS_GATEWAY_METRICS_PORT",
)


@dataclass
class Platform:
    """A platform started by the real `llmops up`, on free ports, in its own data dir."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    data_dir: Path
    log_path: Path

    def state(self) -> dict[str, object]:
        return dict(json.loads((self.data_dir / "platform.json").read_text()))

    def another_gateway(self, data_dir: Path, **env: str) -> ServiceProcess:
        """A second gateway on this platform's NATS and services, on ports of its own
        (not started yet); `env` adds or overrides settings."""
        own = {k: v for k, v in self.env.items() if k not in _GATEWAY_ADDRESSES}
        own |= {"LLMOPS_GATEWAY_HTTP_ADDR": f"127.0.0.1:{free_port()}", **env}
        return ServiceProcess("gateway", self.nats_url, data_dir, **own)

    @property
    def nats_url(self) -> str:
        """Every NATS node of the running platform (one, or a cluster's three), comma separated."""
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return str(self.state()["nats_url"])
        return self.env["LLMOPS_NATS_URL"]

    @property
    def nats_servers(self) -> list[str]:
        return nats_servers(self.nats_url)

    def components(self) -> dict[str, str]:
        """Each process of the platform (every NATS node and replica) -> its address."""
        found = self.state()["components"]
        assert isinstance(found, dict)
        return {str(k): str(v) for k, v in found.items()}

    def addr(self, service: str) -> str:
        """The service's address book entry (a cluster's: every replica, comma separated)."""
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            return str(self.state()["grpc"][service])  # type: ignore[index]
        return self.env[f"LLMOPS_{service.upper()}_ADDR"]

    @property
    def http_base_url(self) -> str:
        """The gateway's OpenAI-compatible API, as an SDK's `base_url`."""
        return f"http://{self.env['LLMOPS_GATEWAY_HTTP_ADDR']}/v1"

    @property
    def api_key(self) -> str:
        """The local key of tenant `default` that `llmops up` created."""
        return (self.data_dir / "api-key").read_text().strip()

    def pid(self, name: str) -> int:
        pids = self.state()["pids"]
        assert isinstance(pids, dict)
        return int(pids[name])

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LLMOPS, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_restarted(self, name: str, old_pid: int, timeout_s: float = 60) -> int:
        """Wait until the supervisor restarted `name` and it reports healthy again."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                pid = self.pid(name)
                if pid != old_pid and self.cli("status").returncode == 0:
                    return pid
            time.sleep(0.3)
        raise TimeoutError(f"{name} was not restarted\n{self.log()[-3000:]}")


def platform_env(data_dir: Path, triton: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LLMOPS_DATA_DIR=str(data_dir),
        LLMOPS_MODELS_DIR=str(ROOT / "models"),
        LLMOPS_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        LLMOPS_NATS_MONITOR_PORT=str(free_port()),
        LLMOPS_INGESTION_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_EMBEDDING_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_RETRIEVAL_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_INFERENCE_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_INGESTION_METRICS_PORT=str(free_port()),
        LLMOPS_EMBEDDING_METRICS_PORT=str(free_port()),
        LLMOPS_RETRIEVAL_METRICS_PORT=str(free_port()),
        LLMOPS_INFERENCE_METRICS_PORT=str(free_port()),
        LLMOPS_GATEWAY_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_GATEWAY_HTTP_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_GATEWAY_METRICS_PORT=str(free_port()),
        LLMOPS_ANALYTICS_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_ANALYTICS_METRICS_PORT=str(free_port()),
        LLMOPS_METERING_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_METERING_METRICS_PORT=str(free_port()),
        LLMOPS_GUARDRAILS_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_GUARDRAILS_METRICS_PORT=str(free_port()),
        LLMOPS_EVALUATION_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_EVALUATION_METRICS_PORT=str(free_port()),
        # Online scoring calls guardrails and embedding for a share of all traffic: on a
        # 2-core machine that load makes other tests' time budgets flaky. Its own tests
        # (tests/evaluation) run it with their rates.
        LLMOPS_EVALUATION_SAMPLE_RATE="0",
        LLMOPS_TRITON_ENABLED="true" if triton else "false",
        LLMOPS_TRITON_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        LLMOPS_TRITON_HTTP_PORT=str(free_port()),
        LLMOPS_TRITON_METRICS_PORT=str(free_port()),
        LLMOPS_TRITON_DIR=str(ROOT / ".cache" / "triton"),
        LLMOPS_TRITON_MODEL_REPOSITORY=str(ROOT / "deploy" / "triton" / "models"),
        LLMOPS_LOG_LEVEL="INFO",
        NO_COLOR="1",
    )
    return env


@contextlib.contextmanager
def run_platform(
    data_dir: Path,
    triton: bool = True,
    extra_env: dict[str, str] | None = None,
    timeout_s: float = 180,
    env: dict[str, str] | None = None,
    cluster: bool = False,
) -> Iterator[Platform]:
    """`llmops up` in `data_dir`; a previous platform's `env` restarts it on the same ports;
    `cluster`: `llmops up --cluster` (three NATS nodes, two processes of every service)."""
    env = env or {**platform_env(data_dir, triton), **(extra_env or {})}
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [LLMOPS, "up", *(["--cluster"] if cluster else [])],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        platform = Platform(proc, env, data_dir, log_path)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    if platform.state().get("ready"):
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"llmops up did not become ready:\n{platform.log()[-5000:]}")
                time.sleep(0.2)
            yield platform
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ServiceProcess:
    """One service (`python -m <name>`) as its own process on free ports, against a NATS."""

    def __init__(self, name: str, nats_url: str, data_dir: Path, **env: str) -> None:
        self.name = name
        self.addr = f"127.0.0.1:{free_port()}"
        self.data_dir = data_dir
        self.log_path = data_dir / f"{name}.log"
        upper = name.upper()
        self.env = {
            **os.environ,
            "LLMOPS_NATS_URL": nats_url,
            "LLMOPS_DATA_DIR": str(data_dir),
            f"LLMOPS_{upper}_ADDR": self.addr,
            f"LLMOPS_{upper}_METRICS_PORT": str(free_port()),
            "LLMOPS_LOG_FORMAT": "console",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._channel: grpc.aio.Channel | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def channel(self) -> grpc.aio.Channel:
        """One channel, kept (latency is measured through it)."""
        if self._channel is None:
            self._channel = channel(self.addr)
        return self._channel

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.name],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_healthy(self, healthy: bool = True, timeout_s: float = 60) -> float:
        """Until readiness is `healthy`; the seconds it took."""
        started = time.monotonic()
        while await check_health(self.addr) != healthy:
            assert self.proc is not None and self.proc.poll() is None, self.log()[-3000:]
            if time.monotonic() > started + timeout_s:
                raise TimeoutError(f"{self.name} healthy != {healthy}\n{self.log()[-3000:]}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
