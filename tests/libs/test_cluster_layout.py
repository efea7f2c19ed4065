"""`llmops up --cluster`'s port layout: no two processes are handed the same port."""

from __future__ import annotations

import random
from pathlib import Path

from llmops.cli.cluster import cluster_layout
from llmops.cli.platform import SERVICES
from llmops.settings import CommonSettings


def test_replicas_never_take_a_port_a_first_process_is_configured_with(tmp_path: Path) -> None:
    # Configured ports packed the way a replica searches: service i's gRPC port at
    # base + i, its metrics port at base + 100 + i. A replica 2 searching up from
    # base + 100 passes the later services' metrics ports, which nothing listens on yet.
    base = random.randrange(20_000, 30_000, 1_000)
    addrs = {f"{name}_addr": f"127.0.0.1:{base + i}" for i, name in enumerate(SERVICES)}
    metrics = {
        f"LLMOPS_{name.upper()}_METRICS_PORT": str(base + 100 + i)
        for i, name in enumerate(SERVICES)
    }
    settings = CommonSettings(
        data_dir=tmp_path,
        nats_url=f"nats://127.0.0.1:{base + 200}",
        nats_monitor_port=base + 201,
        gateway_http_addr=f"127.0.0.1:{base + 202}",
        triton_grpc_addr=f"127.0.0.1:{base + 203}",
        triton_http_port=base + 204,
        triton_metrics_port=base + 205,
        **addrs,
    )
    layout = cluster_layout(settings, SERVICES, metrics)

    nats_ports = [
        port
        for _, config in layout.nats
        for port in (config.port, config.http_port, config.cluster.port)  # type: ignore[union-attr]
    ]
    replica_ports = [
        int(value.rsplit(":", 1)[-1])
        for replicas in layout.replicas.values()
        for replica in replicas
        for key, value in replica.env.items()
        if key != "LLMOPS_RETRIEVAL_REPLICA"
    ]
    configured = {int(p) for p in metrics.values()} | {base + 203, base + 204, base + 205}
    every = nats_ports + replica_ports + sorted(configured)
    assert len(every) == len(set(every)), sorted(p for p in every if every.count(p) > 1)
    # The first replica keeps what it was configured with.
    for i, name in enumerate(SERVICES):
        assert layout.replicas[name][0].address == f"127.0.0.1:{base + i}"
