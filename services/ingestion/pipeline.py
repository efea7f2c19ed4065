"""From a published Document to a ChunkedDocument: the CPU-bound part of ingestion.

Split in two so the registry check sits between them: `prepare` (size check,
format detection, parsing, cleaning, hashing) and `chunk` (only for content
that actually changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ingestion.chunking import Chunker
from ingestion.formats import detect_format
from ingestion.hashing import chunk_id, content_hash
from ingestion.limits import check_size
from ingestion.parsing import ParsedDocument, parse
from llmops.v1 import documents_pb2


@dataclass(frozen=True)
class PreparedDocument:
    parsed: ParsedDocument
    content_hash: str


class DocumentPipeline:
    def __init__(
        self, tokenizer_file: Path, max_bytes: int, chunk_tokens: int, overlap_tokens: int
    ) -> None:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._chunker = Chunker(tokenizer, max_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        self._max_bytes = max_bytes

    def prepare(self, doc: documents_pb2.Document) -> PreparedDocument:
        check_size(doc.content, self._max_bytes)
        fmt = detect_format(int(doc.format), doc.content_type, doc.source, doc.content)
        parsed = parse(doc.content, fmt)
        return PreparedDocument(parsed, content_hash(parsed))

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
