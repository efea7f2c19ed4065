"""Retrieval settings (`LLMOPS_*`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from llmops.bus.topology import RETRIEVAL_CONSUMER, Consumer
from llmops.encoder.settings import EncoderSettings
from retrieval.store.points import DEFAULT_FUSION, Fusion


class RetrievalSettings(EncoderSettings):
    qdrant_url: str | None = Field(None, description="Qdrant server/cluster; unset = embedded Edge")
    qdrant_api_key: str | None = None
    retrieval_replica: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="this process is an embedded read replica of that name: Edge shards and a "
        "durable consumer of its own (`llmops up --cluster`); unset = the one shared consumer",
    )
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

    @model_validator(mode="after")
    def _replica_needs_edge(self) -> RetrievalSettings:
        if self.retrieval_replica and self.qdrant_url:
            raise ValueError(
                "LLMOPS_RETRIEVAL_REPLICA is for embedded Qdrant Edge shards; replicas on a "
                "Qdrant server share its collection and the one consumer: unset it"
            )
        return self

    @property
    def store_dir(self) -> Path:
        """Where the Edge shards live: a read replica keeps its own copy of every document."""
        name = self.retrieval_replica
        return self.data_dir / f"retrieval-{name}" if name else self.data_dir

    @property
    def index_consumer(self) -> Consumer:
        """The durable that feeds the index: a read replica reads every document itself."""
        name = self.retrieval_replica
        if not name:
            return RETRIEVAL_CONSUMER
        return dataclasses.replace(RETRIEVAL_CONSUMER, durable=f"retrieval-{name}")
