"""Ingestion throughput: publish -> searchable, beside the raw embedding model, in one run.

    .venv/bin/python bench/ingest.py [--docs 2000]

1. Raw encoder: the documents are chunked exactly as ingestion chunks them and
   the chunks are embedded by the same ONNX model, variant and batch size the
   embedding service uses — no NATS, no services. This is the ceiling.
2. Pipeline: the real platform (`llmops up`: NATS + services, Triton off) is
   started, every document is published to `llmops.docs.ingest`, and the clock
   stops when the last one is reported searchable.

The ratio pipeline/raw (chunks/s) is the figure that matters (aim >= 0.8).
Documents are SciFact abstracts (bench/data/scifact), real scientific prose.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import run_platform  # noqa: E402

from embedding.settings import EmbeddingSettings  # noqa: E402
from ingestion.pipeline import DocumentPipeline  # noqa: E402
from ingestion.settings import IngestionSettings  # noqa: E402
from llmops.docclient import DocumentClient  # noqa: E402
from llmops.encoder.onnx import OnnxEncoder  # noqa: E402
from llmops.v1 import documents_pb2, events_pb2  # noqa: E402

CORPUS = ROOT / "bench" / "data" / "scifact" / "corpus.jsonl.gz"
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
TENANT = "bench"


def load_documents(n: int) -> list[documents_pb2.Document]:
    docs = []
    with gzip.open(CORPUS, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            text = f"{row['title']}\n\n{row['text']}".encode()
            docs.append(
                documents_pb2.Document(
                    tenant=TENANT,
                    doc_id=row["_id"],
                    title=row["title"],
                    content=text,
                    content_type="text/plain",
                    source=f"scifact/{row['_id']}",
                )
            )
            if len(docs) == n:
                break
    return docs


def raw_encoder(docs: list[documents_pb2.Document]) -> tuple[float, int, int]:
    """Seconds, chunks and tokens for the bare model on the very chunks ingestion makes."""
    ingest, embed = IngestionSettings(), EmbeddingSettings()
    pipeline = DocumentPipeline(
        MODEL_DIR / "tokenizer.json",
        ingest.max_document_bytes,
        ingest.chunk_tokens,
        ingest.chunk_overlap_tokens,
    )
    texts = [c.text for d in docs for c in pipeline.chunk(d, pipeline.prepare(d), 1).chunks]
    encoder = OnnxEncoder(
        MODEL_DIR,
        embed.embedding_variant,
        device=embed.embedding_device,
        batch_size=embed.embedding_batch_size,
        intra_op_threads=embed.embedding_threads,
    )
    encoder.encode(texts[:64])  # warm-up, as the service is warm when documents arrive
    started = time.perf_counter()
    result = encoder.encode(texts)
    return time.perf_counter() - started, len(texts), sum(result.token_counts)


async def through_platform(docs: list[documents_pb2.Document], nats_url: str) -> tuple[float, int]:
    """Seconds from the first publish until the last document is searchable, and chunks."""
    client = await DocumentClient.connect(nats_url)
    await client.watch()
    done = 0
    started = time.perf_counter()

    def progress(_: events_pb2.DocumentEvent) -> None:
        nonlocal done
        done += 1
        if done % 200 == 0 or done == len(docs):
            elapsed = time.perf_counter() - started
            eta = elapsed / done * (len(docs) - done)
            print(f"  {done}/{len(docs)} searchable, {done / elapsed:.1f} docs/s, eta {eta:.0f}s")

    try:
        publishing = asyncio.gather(*(client.publish(d) for d in docs))
        outcomes = await client.wait_for(
            [(TENANT, d.doc_id) for d in docs], timeout_s=3600, on_outcome=progress
        )
        await publishing
    finally:
        await client.close()
    elapsed = time.perf_counter() - started
    failed = [e for e in outcomes.values() if e.status != events_pb2.DOCUMENT_STATUS_INDEXED]
    if failed:
        raise SystemExit(f"{len(failed)} documents not indexed, e.g. {failed[0]}")
    return elapsed, sum(e.chunks for e in outcomes.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    docs = load_documents(args.docs)
    print(f"{len(docs)} SciFact documents, {sum(len(d.content) for d in docs) / 1e6:.1f} MB")

    print("raw encoder (same chunks, same model and settings, no platform)...")
    raw_s, raw_chunks, raw_tokens = raw_encoder(docs)
    print(f"  {raw_chunks} chunks, {raw_tokens} tokens in {raw_s:.1f}s")

    print("pipeline (llmops up: NATS + ingestion + embedding + retrieval)...")
    with tempfile.TemporaryDirectory() as tmp, run_platform(Path(tmp) / "data", triton=False) as p:
        pipe_s, pipe_chunks = asyncio.run(through_platform(docs, p.nats_url))

    raw_cps, pipe_cps = raw_chunks / raw_s, pipe_chunks / pipe_s
    rows = [
        ("raw encoder", len(docs) / raw_s, raw_cps),
        ("publish -> searchable", len(docs) / pipe_s, pipe_cps),
    ]
    print(f"\n{'':24}{'docs/s':>10}{'chunks/s':>10}")
    for name, dps, cps in rows:
        print(f"{name:24}{dps:>10.1f}{cps:>10.1f}")
    print(f"{'ratio pipeline/raw':24}{'':>10}{pipe_cps / raw_cps:>10.2f}   (aim >= 0.8)")
    if pipe_chunks != raw_chunks:
        print(f"note: pipeline made {pipe_chunks} chunks, the raw run {raw_chunks}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "documents": len(docs),
                "chunks": pipe_chunks,
                "raw_seconds": raw_s,
                "raw_chunks_per_s": raw_cps,
                "pipeline_seconds": pipe_s,
                "pipeline_docs_per_s": len(docs) / pipe_s,
                "pipeline_chunks_per_s": pipe_cps,
                "ratio": pipe_cps / raw_cps,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
