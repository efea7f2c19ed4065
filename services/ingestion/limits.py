"""Size limits, checked on the raw bytes before any parsing work is spent."""

from __future__ import annotations

from ingestion.errors import DocumentTooLarge


def check_size(content: bytes, max_bytes: int) -> None:
    """Refuse content over `max_bytes`.

    Checked first so an oversized upload costs nothing but its length; the
    message carries both numbers so the publisher knows by how much it is over.
    """
    if len(content) > max_bytes:
        raise DocumentTooLarge(f"content is {len(content)} bytes; the limit is {max_bytes} bytes")
