"""Embedding settings (`LLMOPS_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops.encoder.settings import EncoderSettings


class EmbeddingSettings(EncoderSettings):
    embedding_device: Literal["auto", "cpu", "cuda"] = "auto"
    embedding_batch_size: int = Field(32, description="texts per ONNX Runtime call")
    embedding_threads: int | None = Field(None, description="ONNX intra-op threads; None = cores")
    embed_fetch_docs: int = Field(
        256, description="documents pulled per stage batch (more chunks sort into tighter batches)"
    )
    embed_max_texts: int = Field(256, description="texts per gRPC Embed call")
    embedding_metrics_port: int = 9462
