"""Typed settings shared by every service and the CLI, from `LLMOPS_*` environment variables.

The defaults run the whole platform on one machine; Kubernetes overrides them
through env vars. `CommonSettings` is also the platform's address book: every
process needs to know where NATS and the gRPC services are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def port_of(addr: str) -> int:
    """The port of a `host:port` address (the port a service listens on)."""
    return int(addr.rsplit(":", 1)[1])


def nats_servers(url: str) -> list[str]:
    """The servers of `LLMOPS_NATS_URL`: one URL, or a cluster's nodes separated by commas."""
    return [u.strip() for u in url.split(",") if u.strip()]


class CommonSettings(BaseSettings):
    """What every service and the CLI share."""

    model_config = SettingsConfigDict(env_prefix="LLMOPS_", extra="ignore")

    data_dir: Path = Field(Path(".llmops"), description="state of the local platform")
    models_dir: Path = Field(Path("models"), description="exported model files (make setup)")
    embedding_model: str = Field(
        "all-MiniLM-L6-v2",
        description="folder under models_dir; ingestion chunks with this model's tokenizer",
    )
    nats_url: str = Field(
        "nats://127.0.0.1:4222", description="NATS, or a cluster's nodes separated by commas"
    )
    bind_host: str = Field("127.0.0.1", description="interface gRPC and metrics servers bind")
    grpc_port: int | None = Field(
        None,
        description="the port this process's gRPC server listens on; unset = its address's "
        "(replicas of a local cluster each get their own)",
    )
    ingestion_addr: str = "127.0.0.1:50061"
    embedding_addr: str = "127.0.0.1:50062"
    retrieval_addr: str = "127.0.0.1:50063"
    inference_addr: str = "127.0.0.1:50064"
    gateway_addr: str = "127.0.0.1:50065"
    analytics_addr: str = "127.0.0.1:50066"
    metering_addr: str = "127.0.0.1:50067"
    guardrails_addr: str = "127.0.0.1:50068"
    evaluation_addr: str = "127.0.0.1:50069"
    gateway_http_addr: str = Field(
        "127.0.0.1:8080", description="the gateway's OpenAI-compatible HTTP API"
    )
    nats_monitor_port: int = 8222
    triton_enabled: bool = Field(True, description="start Triton with `llmops up`")
    triton_grpc_addr: str = "127.0.0.1:8001"
    triton_http_port: int = 8000
    triton_metrics_port: int = 8002
    triton_dir: Path = Field(Path(".cache/triton"), description="the unpacked Triton runtime")
    triton_model_repository: Path = Path("deploy/triton/models")
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    otlp_endpoint: str | None = Field(None, description="OTLP/gRPC collector; unset = no export")
    js_replicas: int = Field(1, description="JetStream stream replicas (3 in production)")
    max_deliver: int = Field(5, description="deliveries before a message is dead-lettered")
    ack_wait_s: float = Field(60.0, description="redelivery delay of an unacked message")
    # The one document size limit: checked where the bytes arrive (`llmops ingest`, gRPC
    # Ingest, ingestion on the bus, before it reads an upload) and by the parser.
    max_document_bytes: int = Field(
        256 * 1024 * 1024, description="larger documents are refused (over 8 MiB: by reference)"
    )

    @property
    def nats_store_dir(self) -> Path:
        return self.data_dir / "nats"

    @property
    def service_addrs(self) -> dict[str, str]:
        """Each gRPC service's address, by service name."""
        return {
            "ingestion": self.ingestion_addr,
            "embedding": self.embedding_addr,
            "retrieval": self.retrieval_addr,
            "inference": self.inference_addr,
            "gateway": self.gateway_addr,
            "analytics": self.analytics_addr,
            "metering": self.metering_addr,
            "guardrails": self.guardrails_addr,
            "evaluation": self.evaluation_addr,
        }

    @property
    def embedding_model_dir(self) -> Path:
        return self.models_dir / self.embedding_model
