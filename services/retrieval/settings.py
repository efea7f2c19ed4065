"""Retrieval settings (`LLMOPS_*`)."""

from __future__ import annotations

from pydantic import Field

from llmops.settings import CommonSettings


class RetrievalSettings(CommonSettings):
    qdrant_url: str | None = Field(None, description="Qdrant server/cluster; unset = embedded Edge")
    qdrant_api_key: str | None = None
    search_default_k: int = 5
    search_max_k: int = 1000
    query_timeout_s: float = Field(5.0, description="deadline for embedding a query")
    index_batch_size: int = 64
    optimize_after_chunks: int = Field(1000, description="changed chunks before an optimise")
    optimize_idle_s: float = Field(5.0, description="quiet seconds before an optimise")
    retrieval_metrics_port: int = 9463
