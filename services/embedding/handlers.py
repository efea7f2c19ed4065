"""Embedding's edges: the stage that embeds chunked documents, and gRPC `Embed` for queries.

The stage pulls up to `embed_fetch_docs` documents at once and embeds all
their chunks together, so ONNX Runtime always sees full, length-sorted
batches whatever the document sizes; inference runs in a worker thread so
gRPC queries keep being served meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import numpy.typing as npt
from nats.js import JetStreamContext

from embedding.settings import EmbeddingSettings
from llmops import metrics
from llmops.bus.codec import CONTENT_TYPE, PROTOBUF, MalformedMessage, decode
from llmops.bus.stage import Delivery, PoisonMessage
from llmops.bus.topology import DOCS_EMBEDDED, document_msg_id
from llmops.encoder.onnx import OnnxEncoder
from llmops.logging import get_logger
from llmops.service import Loaded
from llmops.tracing import inject, span
from llmops.v1 import documents_pb2, embedding_pb2, embedding_pb2_grpc

log = get_logger(__name__)
STAGE = "embedding"


def load_encoder(settings: EmbeddingSettings) -> OnnxEncoder:
    """Load the model (blocking: run it in a thread at start-up)."""
    encoder = OnnxEncoder(
        settings.embedding_model_dir,
        variant=settings.embedding_variant,
        device=settings.embedding_device,
        batch_size=settings.embedding_batch_size,
        intra_op_threads=settings.embedding_threads,
    )
    log.info("embedding.model_loaded", model=encoder.model_name, variant=settings.embedding_variant)
    return encoder


class EmbedHandler:
    def __init__(self, model: Loaded[OnnxEncoder], js: Callable[[], JetStreamContext]) -> None:
        self._model = model
        self._js = js

    async def __call__(self, batch: Sequence[Delivery]) -> None:
        docs: list[tuple[Delivery, documents_pb2.ChunkedDocument]] = []
        for delivery in batch:
            try:
                doc = decode(delivery.data, delivery.headers, documents_pb2.ChunkedDocument)
            except MalformedMessage as exc:
                delivery.fail(PoisonMessage(str(exc)))
                continue
            delivery.tenant, delivery.doc_id = doc.tenant, doc.doc_id
            docs.append((delivery, doc))
        texts = [c.text for _, doc in docs for c in doc.chunks]
        encoder = self._model.value
        result = await asyncio.to_thread(encoder.encode, texts)
        offset = 0
        publishes = []
        for delivery, doc in docs:
            n = len(doc.chunks)
            embedded = _embedded_document(
                doc, result.vectors[offset : offset + n], encoder.model_name
            )
            offset += n
            publishes.append(self._publish(delivery, embedded))
        outcomes = await asyncio.gather(*publishes, return_exceptions=True)
        for (delivery, _), outcome in zip(docs, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                delivery.fail(outcome)
        metrics.CHUNKS.labels(STAGE).inc(len(texts))

    async def _publish(self, delivery: Delivery, embedded: documents_pb2.EmbeddedDocument) -> None:
        doc = embedded.document
        with span("embedding.publish", parent=delivery.headers):
            headers = {
                **inject(),
                CONTENT_TYPE: PROTOBUF,
                "Nats-Msg-Id": document_msg_id(DOCS_EMBEDDED, doc.tenant, doc.doc_id, doc.version),
            }
            await self._js().publish(DOCS_EMBEDDED, embedded.SerializeToString(), headers=headers)


def _embedded_document(
    doc: documents_pb2.ChunkedDocument, vectors: npt.NDArray[np.float32], model: str
) -> documents_pb2.EmbeddedDocument:
    chunks = list(doc.chunks)
    del doc.chunks[:]  # the chunks travel once, inside EmbeddedChunk
    return documents_pb2.EmbeddedDocument(
        document=doc,
        model=model,
        chunks=[
            documents_pb2.EmbeddedChunk(chunk=c, dense=v.tolist())
            for c, v in zip(chunks, vectors, strict=True)
        ],
    )


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServicer):
    def __init__(self, model: Loaded[OnnxEncoder], max_texts: int) -> None:
        self._model = model
        self._max_texts = max_texts

    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedResponse:
        if len(request.texts) > self._max_texts:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{len(request.texts)} texts in one call; the limit is {self._max_texts}",
            )
        encoder = self._model.value
        result = await asyncio.to_thread(encoder.encode, list(request.texts))
        return embedding_pb2.EmbedResponse(
            vectors=[embedding_pb2.Vector(values=v.tolist()) for v in result.vectors],
            model=encoder.model_name,
            dimensions=encoder.dimensions,
            token_counts=result.token_counts,
        )
