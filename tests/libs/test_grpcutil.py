"""gRPC servers: readiness follows the service, liveness follows the process."""

from __future__ import annotations

from llmops.grpcutil import LIVENESS, GrpcServer, check_health
from tests.support import free_port


async def test_readiness_and_liveness_are_separate() -> None:
    address = f"127.0.0.1:{free_port()}"
    server = GrpcServer(address, ["llmops.v1.Example"], [])
    await server.start()
    try:
        await server.set_serving(False)  # loading a model, or draining
        assert not await check_health(address)
        assert not await check_health(address, service="llmops.v1.Example")
        assert await check_health(address, service=LIVENESS)
        await server.set_serving(True)
        assert await check_health(address)
        assert await check_health(address, service="llmops.v1.Example")
    finally:
        await server.stop(grace=0)
    assert not await check_health(address, service=LIVENESS)
