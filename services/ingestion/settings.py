"""Ingestion settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmops.settings import CommonSettings

OcrMode = Literal["auto", "off"]


class IngestionSettings(CommonSettings):
    chunk_tokens: int = Field(200, description="max tokens per chunk (model limit 256)")
    chunk_overlap_tokens: int = Field(32, description="tokens repeated between chunks")
    ingest_batch_size: int = 32
    ingestion_metrics_port: int = 9461
    parse_workers: int = Field(1, ge=1, description="parser processes (each document in one)")
    parse_timeout_s: float = Field(120.0, gt=0, description="a document's parsing deadline")
    parse_memory_mb: int = Field(1024, ge=128, description="a parser process's memory cap")
    spool_dir: Path | None = Field(
        None, description="where uploads are streamed before parsing (default: the temp dir)"
    )
    ocr: OcrMode = Field(
        "auto", description="OCR PDF pages without a text layer when tesseract is installed"
    )
    ocr_languages: str = Field("eng", description="tesseract languages, e.g. eng+deu")
    ocr_page_timeout_s: float = Field(30.0, gt=0, description="OCR time limit per PDF page")
