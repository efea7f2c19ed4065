"""A real tritonserver, unpacked from the nvidia-pytriton wheel, starts, answers gRPC and stops."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient

from llmops.triton import EXIT_TIMEOUT_S, TritonStartError, wait_ready
from tests.triton.conftest import StartFn

START_TIMEOUT_S = 60.0


async def test_starts_with_an_empty_model_repository_and_stops_on_sigterm(
    start: StartFn, tmp_path: Path
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    server = start(empty)
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
