"""Deterministic identities: of a document's content, and of each chunk.

Both are derived, never stored-and-looked-up, so a replay, a restart or a
second replica computes the same values and every downstream write is an
idempotent overwrite.
"""

from __future__ import annotations

import hashlib
import json
import uuid

from ingestion.parsing import ParsedDocument

# Changing this re-keys every chunk in Qdrant: it is part of the storage format.
_CHUNK_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "llmops:chunk")


def content_hash(parsed: ParsedDocument) -> str:
    """SHA-256 (hex) of the cleaned title, headings and text.

    Hashing the cleaned document rather than the raw bytes makes re-publishing
    the same content a no-op even when its bytes differ (line endings, spacing,
    markup that cleans away). The title is included because it is shown with
    every search result, so changing it is a change worth a new version. JSON
    framing keeps field boundaries unambiguous.
    """
    payload = [parsed.title, [[section.heading, section.text] for section in parsed.sections]]
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def chunk_id(tenant: str, doc_id: str, version: int, index: int) -> str:
    """A UUIDv5 string for one chunk position of one document version.

    Qdrant takes it as the point id, so re-delivering a chunk overwrites the
    same point instead of duplicating it. JSON framing keeps ("a", "b:c") and
    ("a:b", "c") apart.
    """
    name = json.dumps([tenant, doc_id, version, index], ensure_ascii=False)
    return str(uuid.uuid5(_CHUNK_NAMESPACE, name))
