"""Retrieval settings (`LLMOPS_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops.encoder.settings import EncoderSettings
from retrieval.store.points import DEFAULT_FUSION, Fusion


class RetrievalSettings(EncoderSettings):
    qdrant_url: str | None = Field(None, description="Qdrant server/cluster; unset = embedded Edge")
    qdrant_api_key: str | None = None
    search_default_k: int = 5
    search_max_k: int = 1000
    hybrid_fusion: Fusion = Field(
        DEFAULT_FUSION,
        description="how hybrid search merges dense and BM25: dbsf (scores) or rrf (ranks)",
    )
    query_embedding: Literal["local", "remote"] = Field(
        "local",
        description="embed queries with the model in this process, or ask the embedding service",
    )
    query_embedding_workers: int = Field(
        2, ge=1, description="queries embedded at once in-process (one ONNX Runtime thread each)"
    )
    query_timeout_s: float = Field(5.0, description="deadline for embedding a query remotely")
    index_batch_size: int = 64
    optimize_after_chunks: int = Field(1000, description="changed chunks before an optimise")
    optimize_idle_s: float = Field(5.0, description="quiet seconds before an optimise")
    retrieval_metrics_port: int = 9463
    query_vector_cache_size: int = Field(
        1024, ge=0, description="query texts whose vectors are kept (LRU); 0 = off"
    )
    answer_cache_ttl_s: float = Field(
        7 * 24 * 3600.0, ge=0, description="cached answers older than this are removed; 0 = keep"
    )
    answer_cache_sweep_s: float = Field(
        600.0, gt=0, description="how often expired cached answers are deleted"
    )
