"""Metering settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmops.settings import CommonSettings


class MeteringSettings(CommonSettings):
    metering_metrics_port: int = 9467
    prices_file: Path = Field(
        Path("deploy/metering/prices.yaml"),
        description="the default price table, put in NATS KV when it holds none yet",
    )
