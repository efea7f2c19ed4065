"""Which parser a document needs, decided from the strongest signal available.

Precedence: the explicit format field, then the MIME type, then the source's
file extension, then the content's first bytes. A publisher's explicit word
beats any guess, and a guess from metadata beats sniffing bytes, which can
only recognise PDF, HTML and the Office formats reliably. DOCX, PPTX and XLSX
are all zip files with the same first bytes: sniffing tells them apart by
the main part their `[Content_Types].xml` declares.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
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
    DOCX = 5
    PPTX = 6
    XLSX = 7
    CSV = 8
    JSON = 9
    EML = 10


_MIME_TYPES = {
    "text/plain": Format.TEXT,
    "text/markdown": Format.MARKDOWN,
    "text/x-markdown": Format.MARKDOWN,
    "text/html": Format.HTML,
    "application/xhtml+xml": Format.HTML,
    "application/pdf": Format.PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": Format.DOCX,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": Format.PPTX,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": Format.XLSX,
    "text/csv": Format.CSV,
    "application/csv": Format.CSV,
    "application/json": Format.JSON,
    "text/json": Format.JSON,
    "message/rfc822": Format.EML,
}

_EXTENSIONS = {
    ".txt": Format.TEXT,
    ".text": Format.TEXT,
    ".md": Format.MARKDOWN,
    ".markdown": Format.MARKDOWN,
    ".html": Format.HTML,
    ".htm": Format.HTML,
    ".pdf": Format.PDF,
    ".docx": Format.DOCX,
    ".pptx": Format.PPTX,
    ".xlsx": Format.XLSX,
    ".csv": Format.CSV,
    ".json": Format.JSON,
    ".eml": Format.EML,
}

# The main part's content type in [Content_Types].xml, per Office format
# (macro-enabled and template variants share the prefix).
_OFFICE_MAIN_PARTS = {
    b"application/vnd.openxmlformats-officedocument.wordprocessingml.": Format.DOCX,
    b"application/vnd.ms-word.": Format.DOCX,
    b"application/vnd.openxmlformats-officedocument.presentationml.": Format.PPTX,
    b"application/vnd.ms-powerpoint.": Format.PPTX,
    b"application/vnd.openxmlformats-officedocument.spreadsheetml.": Format.XLSX,
    b"application/vnd.ms-excel.": Format.XLSX,
}
_MAIN_PART = re.compile(rb'ContentType="([^"]+)\.main\+xml"')
_ZIP_MAGIC = b"PK\x03\x04"
_CONTENT_TYPES_BYTES = 1 << 20


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
            "content is not PDF, HTML or an Office file); set format or a supported content_type: "
            + ", ".join(_MIME_TYPES)
        )
    return found


def _from_mime(content_type: str) -> Format | None:
    """Map a MIME type, ignoring parameters such as `; charset=utf-8`.

    Any other `text/*` type is plain text by definition, and any `+json` type
    (RFC 6839) is JSON; anything else (for example `application/octet-stream`)
    says nothing and falls through.
    """
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime in _MIME_TYPES:
        return _MIME_TYPES[mime]
    if mime.endswith("+json"):
        return Format.JSON
    return Format.TEXT if mime.startswith("text/") else None


def _from_extension(source: str) -> Format | None:
    """Map the extension of a path or URL (query and fragment ignored)."""
    path = urlsplit(source).path if "://" in source else source
    return _EXTENSIONS.get(PurePosixPath(path).suffix.lower())


def _sniff(content: bytes) -> Format | None:
    """Recognise PDF by its magic number, HTML by its opening tag, Office files by their parts."""
    if content.startswith(_ZIP_MAGIC):
        return _sniff_office(content)
    head = content[:_SNIFF_BYTES]
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return Format.HTML
    if b"%PDF-" in head:  # PDF readers accept the header anywhere in the first 1 KiB
        return Format.PDF
    return None


def _sniff_office(content: bytes) -> Format | None:
    """The Office format whose main part `[Content_Types].xml` declares, if any."""
    try:
        with (
            zipfile.ZipFile(io.BytesIO(content)) as archive,
            archive.open("[Content_Types].xml") as part,
        ):
            types = part.read(_CONTENT_TYPES_BYTES)  # a few KiB in real files; never a bomb
    except (
        zipfile.BadZipFile,
        KeyError,
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
    ):
        return None  # a zip, but no Office file: nothing to go on
    main = _MAIN_PART.search(types)
    if main is None:
        return None
    return next((f for prefix, f in _OFFICE_MAIN_PARTS.items() if main[1].startswith(prefix)), None)
