"""A real tritonserver, unpacked from the nvidia-pytriton wheel, starts, answers gRPC and stops.

The runtime is unpacked into the repository's `.cache/triton` (gitignored) and
reused by later runs, so the wheel is downloaded once per checkout.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient

from llmops.triton import (
    EXIT_TIMEOUT_S,
    TritonRuntime,
    TritonStartError,
    install_runtime,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "deploy" / "triton" / "models"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    log_file: Path
    grpc_url: str
    http_url: str


StartFn = Callable[[Path], Server]


@pytest.fixture(scope="module")
def runtime() -> TritonRuntime:
    return install_runtime(ROOT / ".cache" / "triton")


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all sockets held open until every port is chosen)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture
def start(runtime: TritonRuntime, tmp_path: Path) -> Iterator[StartFn]:
    """Start tritonserver (output to a log file); every process started is killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def _start(model_repository: Path) -> Server:
        grpc_port, http_port, metrics_port = free_ports(3)
        log_file = tmp_path / f"tritonserver-{len(processes)}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                runtime.command(model_repository, grpc_port, http_port, metrics_port),
                env=runtime.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        processes.append(process)
        return Server(process, log_file, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}")

    try:
        yield _start
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


async def test_starts_with_the_empty_model_repository_and_stops_on_sigterm(
    start: StartFn,
) -> None:
    server = start(MODEL_REPOSITORY)
    await wait_ready(server.http_url, START_TIMEOUT_S, server.process, server.log_file)

    # gRPC honours http_proxy even for 127.0.0.1; Triton is local.
    client = grpcclient.InferenceServerClient(
        server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)]
    )
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        metadata = await client.get_server_metadata()
        assert metadata.name == "triton"
        assert metadata.version
        index = await client.get_model_repository_index()
        assert list(index.models) == []
    finally:
        await client.close()

    server.process.send_signal(signal.SIGTERM)
    began = time.monotonic()
    code = await asyncio.to_thread(server.process.wait, EXIT_TIMEOUT_S + 10)
    assert code == 0, server.log_file.read_text(errors="replace")
    assert time.monotonic() - began < EXIT_TIMEOUT_S


async def test_wait_ready_reports_an_exit_with_the_log(start: StartFn, tmp_path: Path) -> None:
    server = start(tmp_path / "missing-repository")
    with pytest.raises(TritonStartError, match="exited with code 1") as error:
        await wait_ready(server.http_url, START_TIMEOUT_S, server.process, server.log_file)
    assert "missing-repository" in str(error.value)
