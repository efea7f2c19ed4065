"""Ingestion throughput: publish -> searchable, beside the raw embedding model, in one run.

    .venv/bin/python bench/ingest.py [--docs 2000]
    .venv/bin/python bench/ingest.py --large-pdf-mb 200     # one large PDF instead

1. Raw encoder: the documents are chunked exactly as ingestion chunks them and
   the chunks are embedded by the same ONNX model, variant and batch size the
   embedding service uses — no NATS, no services. This is the ceiling.
2. Pipeline: the real platform (`llmops up`: NATS + services, Triton off) is
   started, every document is published to `llmops.docs.ingest`, and the clock
   stops when the last one is reported searchable.

The ratio pipeline/raw (chunks/s) is the figure that matters (aim >= 0.8).
Documents are SciFact abstracts (bench/data/scifact), real scientific prose.

`--large-pdf-mb N`: one PDF of N MB (a page of text and an image per 200 KB,
tests/largepdf.py) goes as `llmops ingest` sends it (uploaded to the object
store, read from disk in blocks) through the platform; the figures are its
upload time, publish -> searchable, and the peak memory of the ingestion
process and of its parser worker beside the file's size.
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

from bench.procs import tree  # noqa: E402
from tests.largepdf import write_large_pdf  # noqa: E402
from tests.support import run_platform  # noqa: E402

from embedding.settings import EmbeddingSettings  # noqa: E402
from ingestion.pipeline import DocumentPipeline  # noqa: E402
from ingestion.settings import IngestionSettings  # noqa: E402
from llmops.docclient import DocumentClient, document_for_file  # noqa: E402
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


_PAGE_BYTES = 200 * 1024  # each page: a few lines of text and an image of this size


def _peak_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


async def large_pdf(path: Path, nats_url: str, ingestion_pid: int) -> dict[str, float]:
    """Upload and ingest one large PDF; its times and the ingestion tree's peak memory."""
    client = await DocumentClient.connect(nats_url)
    await client.watch()
    worker_peak_kb = 0
    stop = asyncio.Event()

    async def watch_workers() -> None:  # the parser workers come and go: sample their RSS
        nonlocal worker_peak_kb
        while not stop.is_set():
            for pid in tree(ingestion_pid)[1:]:
                try:
                    worker_peak_kb = max(worker_peak_kb, _peak_kb(pid, "VmHWM:"))
                except OSError:
                    continue
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(watch_workers())
    baseline_kb = _peak_kb(ingestion_pid, "VmHWM:")
    try:
        doc = document_for_file(path, path.name, TENANT, "default", {})
        started = time.perf_counter()
        await client.publish(doc, file=path)
        uploaded = time.perf_counter()
        [event] = (await client.wait_for([(TENANT, path.name)], timeout_s=3600)).values()
        done = time.perf_counter()
    finally:
        stop.set()
        await sampler
        await client.close()
    if event.status != events_pb2.DOCUMENT_STATUS_INDEXED:
        raise SystemExit(f"not indexed: {event.reason}")
    return {
        "upload_s": uploaded - started,
        "searchable_s": done - started,
        "chunks": event.chunks,
        "ingestion_peak_rss_mb_before": baseline_kb / 1024,
        "ingestion_peak_rss_mb": _peak_kb(ingestion_pid, "VmHWM:") / 1024,
        "parser_worker_peak_rss_mb": worker_peak_kb / 1024,
    }


def run_large_pdf(megabytes: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"report-{megabytes}mb.pdf"
        pages = max(1, megabytes * 1024 * 1024 // _PAGE_BYTES)
        size = write_large_pdf(path, pages=pages, image_bytes_per_page=_PAGE_BYTES)
        print(f"a {size / 2**20:.0f} MiB PDF of {pages} pages; llmops up (Triton off)...")
        limits = {"LLMOPS_MAX_DOCUMENT_BYTES": str(size + 2**20)}
        with run_platform(Path(tmp) / "data", triton=False, extra_env=limits) as p:
            figures = asyncio.run(large_pdf(path, p.nats_url, p.pid("ingestion")))
    figures |= {"file_mb": size / 2**20, "pages": pages}
    for name, value in figures.items():
        print(f"{name:32}{value:>10.1f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--large-pdf-mb", type=int, default=0, help="one PDF of this size")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = ROOT / "bench" / "results"
    if args.large_pdf_mb:
        run_large_pdf(args.large_pdf_mb, args.out or results / "ingest-large-pdf.json")
        return
    args.out = args.out or results / "ingest.json"
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
