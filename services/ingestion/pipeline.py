"""From a published Document to a ChunkedDocument: the CPU-bound part of ingestion.

Split in two so the registry check sits between them: `prepare` (size check,
format detection, parsing, cleaning, hashing; the service runs it in a worker
process, ingestion.worker) and `chunk` (only for content that actually changed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tokenizers import Tokenizer

from ingestion.chunking import Chunker
from ingestion.formats import FORMAT_UNSPECIFIED, Format, detect_format
from ingestion.hashing import chunk_id, content_hash
from ingestion.limits import check_size
from ingestion.parsing import ParsedDocument, parse, parse_file
from llmops.v1 import documents_pb2

_SNIFF_HEAD_BYTES = 64 * 1024
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass(frozen=True)
class PreparedDocument:
    parsed: ParsedDocument
    content_hash: str


@dataclass(frozen=True)
class ParseJob:
    """One document to parse: its bytes, or a spooled file's path (a large upload)."""

    format_value: int
    content_type: str
    source: str
    max_bytes: int
    content: bytes = b""
    path: str = ""

    def describe(self) -> str:
        return repr(self.source) if self.source else "the document"


# Plain text this small is parsed in the service itself: decoding and cleaning it is
# linear, with nothing to nest or inflate, so a worker round trip would only add cost
# (the worker's bookkeeping took ~20% of ingestion's CPU on 2,000 short abstracts).
_IN_PROCESS_TEXT_BYTES = 1024 * 1024


def resolved(job: ParseJob) -> ParseJob:
    """`job` with its inline content's format told, so that whoever parses it (this
    process or a worker) does not detect it again; a spooled file is left to the worker."""
    if job.path or job.format_value != FORMAT_UNSPECIFIED:
        return job
    check_size(len(job.content), job.max_bytes)  # "too large" before "unsupported", as ever
    fmt = detect_format(job.format_value, job.content_type, job.source, job.content)
    return replace(job, format_value=fmt.value)


def harmless(job: ParseJob) -> bool:
    """Whether a resolved `job` can be parsed without a deadline or memory cap: small
    plain text."""
    return (
        not job.path
        and len(job.content) <= _IN_PROCESS_TEXT_BYTES
        and job.format_value == Format.TEXT.value
    )


def prepare(job: ParseJob) -> PreparedDocument:
    """Size check, format detection, parsing, cleaning, hashing: picklable in and out, so
    a worker process can run it."""
    if not job.path:
        check_size(len(job.content), job.max_bytes)
        fmt = detect_format(job.format_value, job.content_type, job.source, job.content)
        return _prepared(parse(job.content, fmt))
    path = Path(job.path)
    check_size(path.stat().st_size, job.max_bytes)
    with path.open("rb") as spooled:
        head = spooled.read(_SNIFF_HEAD_BYTES)
    # An Office file is told by its zip directory, at the end of the file.
    sniffed = path.read_bytes() if head.startswith(_ZIP_MAGIC) else head
    fmt = detect_format(job.format_value, job.content_type, job.source, sniffed)
    return _prepared(parse_file(path, fmt))


def _prepared(parsed: ParsedDocument) -> PreparedDocument:
    return PreparedDocument(parsed, content_hash(parsed))


class DocumentPipeline:
    def __init__(
        self, tokenizer_file: Path, max_bytes: int, chunk_tokens: int, overlap_tokens: int
    ) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._chunker = Chunker(tokenizer, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        self._max_bytes = max_bytes

    def job(self, doc: documents_pb2.Document, path: Path | None = None) -> ParseJob:
        """What a parser needs of `doc`; `path` holds its bytes when they came by reference."""
        return ParseJob(
            int(doc.format),
            doc.content_type,
            doc.source,
            self._max_bytes,
            content=b"" if path else doc.content,
            path=str(path or ""),
        )

    def prepare(self, doc: documents_pb2.Document) -> PreparedDocument:
        """In this process (tests, benchmarks); the service parses in ingestion.worker."""
        return prepare(self.job(doc))

    def chunk(
        self, doc: documents_pb2.Document, prepared: PreparedDocument, version: int
    ) -> documents_pb2.ChunkedDocument:
        chunks = self._chunker.chunk(prepared.parsed)
        return documents_pb2.ChunkedDocument(
            tenant=doc.tenant,
            doc_id=doc.doc_id,
            collection=doc.collection,
            source=doc.source,
            title=doc.title or prepared.parsed.title,
            version=version,
            content_hash=prepared.content_hash,
            metadata=dict(doc.metadata),
            chunks=[
                documents_pb2.Chunk(
                    chunk_id=chunk_id(doc.tenant, doc.doc_id, version, c.index),
                    index=c.index,
                    text=c.text,
                    heading=c.heading,
                    token_count=c.token_count,
                )
                for c in chunks
            ],
        )
