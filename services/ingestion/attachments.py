"""An e-mail's attachments as documents of their own, derived from the parent document.

Each attachment gets a derived doc id, `<parent doc_id>/attachments/<n>-<filename>`
(n its position in the message, so two attachments with one name stay
apart and the ids are the same on every replay), the parent's tenant and
collection, and metadata naming the parent, so a search can filter on
`parent_doc_id`. Only attachments in a format ingestion can parse are
returned: an image or an archive would only be dead-lettered.
"""

from __future__ import annotations

import re

from ingestion.errors import UnsupportedFormat
from ingestion.formats import FORMAT_UNSPECIFIED, detect_format
from ingestion.sections import ParsedDocument, one_line
from llmops.v1 import documents_pb2

PARENT_DOC_ID = "parent_doc_id"
ATTACHMENT_NAME = "attachment"
# Path separators and anything that is neither a word character nor ".-_ ":
# a filename chosen by a sender must not read as a path or a subject token.
_UNSAFE = re.compile(r"[^\w.\- ]+")
_MAX_NAME_CHARS = 100


def attachment_documents(
    doc: documents_pb2.Document, parsed: ParsedDocument
) -> list[documents_pb2.Document]:
    """The parseable attachments of `parsed` (the parsed `doc`), ready to publish for ingestion."""
    documents = []
    for number, attachment in enumerate(parsed.attachments, start=1):
        name = safe_filename(attachment.filename)
        if not attachment.content or not _parseable(
            attachment.content_type, name, attachment.content
        ):
            continue
        path = f"attachments/{number}-{name}"
        documents.append(
            documents_pb2.Document(
                tenant=doc.tenant,
                doc_id=f"{doc.doc_id}/{path}",
                collection=doc.collection,
                source=f"{doc.source or doc.doc_id}#{path}",
                title=name,
                content_type=attachment.content_type,
                content=attachment.content,
                metadata={**doc.metadata, PARENT_DOC_ID: doc.doc_id, ATTACHMENT_NAME: name},
            )
        )
    return documents


def safe_filename(filename: str) -> str:
    """The last path component, unsafe characters made "_", at most 100 characters."""
    base = one_line(filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", base).strip(" .")[-_MAX_NAME_CHARS:]
    return name or "attachment"


def _parseable(content_type: str, name: str, content: bytes) -> bool:
    try:
        detect_format(FORMAT_UNSPECIFIED, content_type, name, content)
    except UnsupportedFormat:
        return False
    return True
