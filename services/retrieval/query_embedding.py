"""Where a query's dense vector comes from: the model in this process, or the embedding service.

`local` (the default) loads the exported model the embedding service embeds documents
with (the same `LLMOPS_EMBEDDING_MODEL` and `LLMOPS_EMBEDDING_VARIANT`) and runs one
query per ONNX Runtime call, on one thread per call, on a small pool: a search costs no
second gRPC hop, and two queries run side by side on two cores. One text per call also
keeps every vector independent of the other queries in flight: the int8 model
quantises its activations per call, so a batch would mix their ranges.

`remote` asks the embedding service, for deployments where the model does not fit
retrieval's pods (a GPU-hosted model): when that service is down, whatever needs a
query vector fails UNAVAILABLE, saying so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import grpc

from llmops.encoder import OnnxEncoder
from llmops.grpcutil import lazy_stub
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.v1 import embedding_pb2, embedding_pb2_grpc
from retrieval.settings import RetrievalSettings

log = get_logger(__name__)


class QueryEmbeddingUnavailable(Exception):
    """No vector for this query; the message says what failed."""


class QueryEmbedder(Protocol):
    async def start(self) -> None: ...

    async def embed(self, text: str, timeout_s: float) -> list[float]:
        """The text's unit vector, or QueryEmbeddingUnavailable."""
        ...

    async def close(self) -> None: ...


class LocalQueryEmbedder:
    """The model in this process; `timeout_s` is moot: a call takes milliseconds."""

    def __init__(self, settings: RetrievalSettings) -> None:
        self._settings = settings
        self._model: Loaded[OnnxEncoder] = Loaded("the query embedding model")
        self._pool = ThreadPoolExecutor(
            settings.query_embedding_workers, thread_name_prefix="query-embed"
        )

    async def start(self) -> None:
        self._model.set(await asyncio.to_thread(load_query_model, self._settings))

    async def embed(self, text: str, timeout_s: float) -> list[float]:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, self._model.value.encode, (text,))
        vector: list[float] = result.vectors[0].tolist()
        return vector

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._model.take()


class RemoteQueryEmbedder:
    """The embedding service's `Embed`, on one channel per process made inside the loop."""

    def __init__(self, stub: Callable[[], embedding_pb2_grpc.EmbeddingStub]) -> None:
        self._stub = stub

    async def start(self) -> None:
        return None

    async def embed(self, text: str, timeout_s: float) -> list[float]:
        try:
            reply = await self._stub().Embed(
                embedding_pb2.EmbedRequest(texts=[text]), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise QueryEmbeddingUnavailable(
                f"the embedding service did not embed the query ({exc.code().name})"
            ) from exc
        return list(reply.vectors[0].values)

    async def close(self) -> None:
        return None


def load_query_model(settings: RetrievalSettings) -> OnnxEncoder:
    """The documents' model for queries (blocking): on the CPU, one ONNX Runtime thread a call.

    Short queries gain nothing from a GPU round trip; a GPU-hosted model is `remote`.
    """
    encoder = OnnxEncoder(
        settings.embedding_model_dir,
        variant=settings.embedding_variant,
        device="cpu",
        intra_op_threads=1,
    )
    log.info(
        "retrieval.query_model_loaded",
        model=encoder.model_name,
        variant=settings.embedding_variant,
        workers=settings.query_embedding_workers,
    )
    return encoder


def query_embedder(settings: RetrievalSettings) -> QueryEmbedder:
    if settings.query_embedding == "remote":
        return RemoteQueryEmbedder(
            lazy_stub(embedding_pb2_grpc.EmbeddingStub, settings.embedding_addr)
        )
    return LocalQueryEmbedder(settings)
