"""Why a document was rejected.

Every error here is permanent for the bytes that caused it: redelivering the
same message fails the same way, so the service dead-letters it at once with
`reason` instead of retrying. Mapping to gRPC status codes happens only at the
servicer edge.
"""

from __future__ import annotations

from typing import ClassVar


class IngestionError(Exception):
    """A document that ingestion refuses; `reason` says why, on one line."""

    code: ClassVar[str] = "ingestion_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def reason(self) -> str:
        """`<code>: <detail>` on a single line.

        One line because it travels as a NATS header on the dead-letter entry,
        where CR/LF are not allowed, and because a stable code prefix lets
        operators group dead letters without parsing prose.
        """
        return f"{self.code}: {' '.join(self.detail.split())}"


class UnsupportedFormat(IngestionError):
    """The format is unknown or cannot be told from the message."""

    code = "unsupported_format"


class EmptyDocument(IngestionError):
    """Nothing left to index once the content is parsed and cleaned."""

    code = "empty_document"


class DocumentTooLarge(IngestionError):
    """The raw content exceeds the configured size limit."""

    code = "document_too_large"


class UnparseableDocument(IngestionError):
    """The bytes do not decode or parse as the format they claim to be."""

    code = "unparseable_document"


class InvalidDocument(IngestionError):
    """The message itself is incomplete or inconsistent (e.g. no doc_id)."""

    code = "invalid_document"
