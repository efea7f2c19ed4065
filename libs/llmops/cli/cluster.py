"""`llmops up --cluster`: three NATS nodes and two processes of every service, on one machine.

What the production manifests promise (a JetStream cluster, R3 streams and
buckets, replicas of each service), on 127.0.0.1, so the fault test and
bench/scaleout.py can kill things. Node and replica 1 keep the configured
ports; the others take the next free ports above them.

Per replica (docs/scaleout.md#a-cluster-on-one-machine):
- every client knows every replica (`LLMOPS_<SVC>_ADDR=ip:port,ip:port`, spread
  round-robin by gRPC) and every NATS node (`LLMOPS_NATS_URL=url,url,url`);
- retrieval replicas are read replicas, each with its own Edge shards and
  durable consumer (`LLMOPS_RETRIEVAL_REPLICA`);
- analytics replicas share one writer lease: the second waits as a standby.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmops.natsserver import ClusterPeer, NatsServerConfig
from llmops.settings import CommonSettings, nats_servers, port_of

NATS_NODES = 3
REPLICAS = 2
NATS_CLUSTER_PORT = 6222  # the first node's route port (the others take the next free ones)
# One writer at a time (llmops.lease): the replica without the lease is alive, not ready.
ONE_WRITER = frozenset({"analytics"})


class PortPlan:
    """Ports for the processes of one platform: free now, and never handed out twice."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def keep(self, port: int) -> int:
        self._taken.add(port)
        return port

    def near(self, start: int) -> int:
        """The first free port from `start` up."""
        port = start
        while port in self._taken or not _free(port):
            port += 1
        return self.keep(port)


def host_port(url: str) -> tuple[str, int]:
    """`nats://host:port` -> (host, port), NATS's defaults for what it leaves out."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 4222


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Replica:
    service: str
    index: int  # 1-based; 0: the one process of a platform without replicas
    address: str  # its gRPC address
    env: dict[str, str]  # what this replica sets on top of the platform's environment

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}" if self.index else self.service


@dataclass
class ClusterLayout:
    nats: list[tuple[str, NatsServerConfig]]  # (process name, config)
    replicas: dict[str, list[Replica]] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        return ",".join(f"nats://{c.host}:{c.port}" for _, c in self.nats)

    def addresses(self) -> dict[str, str]:
        """Each service's replicas, comma separated (its address book entry)."""
        return {
            name: ",".join(r.address for r in replicas) for name, replicas in self.replicas.items()
        }

    def address_book(self) -> dict[str, str]:
        """`LLMOPS_<SVC>_ADDR` for every process."""
        return {f"LLMOPS_{name.upper()}_ADDR": a for name, a in self.addresses().items()}


def cluster_layout(
    settings: CommonSettings, services: tuple[str, ...], environ: Mapping[str, str]
) -> ClusterLayout:
    """Ports for three NATS nodes and `REPLICAS` processes of each service.

    Replica 1 of a service keeps every port it is configured with; replica N takes
    the first free port from 100 x (N - 1) above each (its metrics port: above
    `LLMOPS_<SVC>_METRICS_PORT` when set, else above its gRPC port + 1000).
    """
    plan = PortPlan()
    for port in _configured_ports(settings, services, environ):
        plan.keep(port)  # here, before any replica looks: they are free only until used
    data_dir = settings.data_dir.resolve()
    host, client_port = host_port(nats_servers(settings.nats_url)[0])
    client_ports = [client_port] + [plan.near(client_port + i) for i in range(1, NATS_NODES)]
    monitor_ports = [settings.nats_monitor_port] + [
        plan.near(settings.nats_monitor_port + i) for i in range(1, NATS_NODES)
    ]
    route_ports = [plan.near(NATS_CLUSTER_PORT + i) for i in range(NATS_NODES)]
    routes = tuple(f"nats://{host}:{p}" for p in route_ports)
    nats = [
        (
            f"nats-{i + 1}",
            NatsServerConfig(
                port=client_ports[i],
                http_port=monitor_ports[i],
                store_dir=data_dir / f"nats-{i + 1}",
                host=host,
                cluster=ClusterPeer(f"nats-{i + 1}", route_ports[i], routes),
            ),
        )
        for i in range(NATS_NODES)
    ]
    layout = ClusterLayout(nats)
    http_port = port_of(settings.gateway_http_addr)
    addrs = settings.service_addrs
    for name in services:
        base = port_of(addrs[name].split(",")[0])
        metrics_key = f"LLMOPS_{name.upper()}_METRICS_PORT"
        replicas = []
        for index in range(1, REPLICAS + 1):
            step = 100 * (index - 1)
            env: dict[str, str] = {}
            if index == 1:
                grpc_port = base
            else:
                grpc_port = plan.near(base + step)
                metrics = int(environ.get(metrics_key, base + 1000))
                env[metrics_key] = str(plan.near(metrics + step))
            env["LLMOPS_GRPC_PORT"] = str(grpc_port)
            if name == "gateway":
                port = http_port if index == 1 else plan.near(http_port + index - 1)
                env["LLMOPS_GATEWAY_HTTP_ADDR"] = f"127.0.0.1:{port}"
            if name == "retrieval":
                env["LLMOPS_RETRIEVAL_REPLICA"] = str(index)
            replicas.append(Replica(name, index, f"127.0.0.1:{grpc_port}", env))
        layout.replicas[name] = replicas
    return layout


def _configured_ports(
    settings: CommonSettings, services: tuple[str, ...], environ: Mapping[str, str]
) -> list[int]:
    """Every port the platform's first processes are configured with.

    Nothing listens on them yet when the layout is made, so a replica looking for a
    free port would otherwise be handed, say, the embedding service's metrics port.
    """
    ports = [
        host_port(nats_servers(settings.nats_url)[0])[1],
        settings.nats_monitor_port,
        port_of(settings.gateway_http_addr),
        port_of(settings.triton_grpc_addr),
        settings.triton_http_port,
        settings.triton_metrics_port,
    ]
    ports += [port_of(settings.service_addrs[name].split(",")[0]) for name in services]
    keys = (f"LLMOPS_{name.upper()}_METRICS_PORT" for name in services)
    return ports + [int(environ[key]) for key in keys if key in environ]
