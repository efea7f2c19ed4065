"""Fixtures for tests that run a real tritonserver, unpacked from the nvidia-pytriton wheel.

The runtime is unpacked into the repository's `.cache/triton` (gitignored) and
reused by later runs, so the wheel is downloaded once per checkout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.triton import TritonRuntime, install_runtime
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    log_file: Path
    grpc_url: str
    http_url: str


StartFn = Callable[[Path], Server]


@pytest.fixture(scope="session")
def runtime() -> TritonRuntime:
    return install_runtime(ROOT / ".cache" / "triton")


@pytest.fixture
def start(runtime: TritonRuntime, tmp_path: Path) -> Iterator[StartFn]:
    """Start tritonserver (output to a log file); every process started is killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    def _start(model_repository: Path) -> Server:
        grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
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
