"""Analytics settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmops.settings import CommonSettings


class AnalyticsSettings(CommonSettings):
    clickhouse_url: str | None = Field(
        None,
        description="a ClickHouse server or cluster (http[s]://user:password@host:8123); "
        "unset: the embedded chDB under the data dir",
    )
    clickhouse_database: str = Field("llmops", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    migrations_dir: Path = Field(
        Path("deploy/clickhouse/migrations"), description="ordered *.sql applied at start"
    )
    analytics_metrics_port: int = 9466
    analytics_batch_size: int = Field(
        10_000, gt=0, le=20_000, description="events per insert at most (<= max_ack_pending)"
    )
    analytics_flush_interval_s: float = Field(
        0.5, ge=0, description="how long a batch keeps filling before it is inserted"
    )
    analytics_outage_hold_s: float = Field(
        10.0, gt=0, description="how long a batch waits for ClickHouse before going back to NATS"
    )
    analytics_raw_ttl_days: int = Field(
        365, ge=0, description="days event rows are kept (0: forever)"
    )
    analytics_rollup_ttl_days: int = Field(
        0, ge=0, description="days daily/hourly rollups are kept (0: forever)"
    )
    analytics_max_rows: int = Field(10_000, gt=0, description="rows a Query returns at most")
    analytics_query_timeout_s: float = Field(
        10.0, gt=0, description="longest a Query may run (a caller may ask for less)"
    )
    analytics_query_concurrency: int = Field(4, gt=0, description="queries run at once")

    @property
    def chdb_dir(self) -> Path:
        return self.data_dir / "clickhouse"
