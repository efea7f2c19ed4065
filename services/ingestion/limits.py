"""Size limits, checked on the raw bytes before any parsing work is spent."""

from __future__ import annotations

from ingestion.errors import DocumentTooLarge


def check_size(size: int, max_bytes: int) -> None:
    """Refuse content of `size` bytes when over `max_bytes` (LLMOPS_MAX_DOCUMENT_BYTES).

    Checked first so an oversized upload costs nothing but its length; the
    message carries both numbers so the publisher knows by how much it is over.
    """
    if size > max_bytes:
        raise DocumentTooLarge(
            f"content is {size} bytes; the limit is {max_bytes} bytes (LLMOPS_MAX_DOCUMENT_BYTES)"
        )
