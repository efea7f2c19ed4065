"""Ingestion settings (`LLMOPS_*`)."""

from __future__ import annotations

from pydantic import Field

from llmops.settings import CommonSettings


class IngestionSettings(CommonSettings):
    max_document_bytes: int = Field(20 * 1024 * 1024, description="larger documents are refused")
    chunk_tokens: int = Field(200, description="max tokens per chunk (model limit 256)")
    chunk_overlap_tokens: int = Field(32, description="tokens repeated between chunks")
    ingest_batch_size: int = 32
    ingestion_metrics_port: int = 9461
