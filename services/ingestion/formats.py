"""Which parser a document needs, decided from the strongest signal available.

Precedence: the explicit format field, then the MIME type, then the source's
file extension, then the content's first bytes. A publisher's explicit word
beats any guess, and a guess from metadata beats sniffing bytes, which can
only recognise PDF and HTML reliably.
"""

from __future__ import annotations

from enum import Enum
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from ingestion.errors import UnsupportedFormat

FORMAT_UNSPECIFIED = 0
_SNIFF_BYTES = 1024


class Format(Enum):
    """Formats ingestion can parse.

    The values are the proto `DocumentFormat` numbers, so `Format(value)`
    converts a wire value directly.
    """

    TEXT = 1
    MARKDOWN = 2
    HTML = 3
    PDF = 4


_MIME_TYPES = {
    "text/plain": Format.TEXT,
    "text/markdown": Format.MARKDOWN,
    "text/x-markdown": Format.MARKDOWN,
    "text/html": Format.HTML,
    "application/xhtml+xml": Format.HTML,
    "application/pdf": Format.PDF,
}

_EXTENSIONS = {
    ".txt": Format.TEXT,
    ".text": Format.TEXT,
    ".md": Format.MARKDOWN,
    ".markdown": Format.MARKDOWN,
    ".html": Format.HTML,
    ".htm": Format.HTML,
    ".pdf": Format.PDF,
}


def detect_format(format_enum_value: int, content_type: str, source: str, content: bytes) -> Format:
    """Return the document's format, or raise UnsupportedFormat saying what was seen."""
    if format_enum_value != FORMAT_UNSPECIFIED:
        try:
            return Format(format_enum_value)
        except ValueError:
            raise UnsupportedFormat(f"unknown format value {format_enum_value}") from None
    found = _from_mime(content_type) or _from_extension(source) or _sniff(content)
    if found is None:
        raise UnsupportedFormat(
            f"cannot tell the format (content_type={content_type!r}, source={source!r}, "
            "content is neither PDF nor HTML); set format or a supported content_type: "
            + ", ".join(_MIME_TYPES)
        )
    return found


def _from_mime(content_type: str) -> Format | None:
    """Map a MIME type, ignoring parameters such as `; charset=utf-8`.

    Any other `text/*` type is plain text by definition; anything else (for
    example `application/octet-stream`) says nothing and falls through.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _MIME_TYPES:
        return _MIME_TYPES[mime]
    return Format.TEXT if mime.startswith("text/") else None


def _from_extension(source: str) -> Format | None:
    """Map the extension of a path or URL (query and fragment ignored)."""
    path = urlsplit(source).path if "://" in source else source
    return _EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def _sniff(content: bytes) -> Format | None:
    """Recognise PDF by its magic number and HTML by its opening tag."""
    head = content[:_SNIFF_BYTES]
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return Format.HTML
    if b"%PDF-" in head:  # PDF readers accept the header anywhere in the first 1 KiB
        return Format.PDF
    return None
