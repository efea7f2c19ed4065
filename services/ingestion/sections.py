"""The shape every parser produces, and the canonical cleaning they all share.

Kept apart from the parsers so each format's module (office, tables, mail,
...) builds the same `ParsedDocument` with the same cleaning, and chunking,
hashing and everything downstream never branch on format.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from ingestion.errors import IngestionError, UnparseableDocument


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path, e.g. heading "Install > Linux" ("" before any heading).

    `table` marks a table: one row per line, cells joined by " | ", the first
    line its header row. The chunker keeps each row whole and repeats the
    header at the top of every chunk, so a chunk of a long table still says
    what its columns mean.
    """

    heading: str
    text: str
    table: bool = False


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file carried inside a document (an e-mail's attachment), indexed as its own document."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's title ("" if it has none), its non-empty sections, in order, and attachments.

    `warnings` name what was indexed in an unusual way or left out (a PDF's
    scanned pages OCR'd, or not indexed without OCR), so the sender can learn
    that an indexed document is incomplete.
    """

    title: str
    sections: list[Section]
    attachments: list[Attachment] = field(default_factory=list)
    warnings: tuple[str, ...] = ()


T = TypeVar("T")

# --- cleaning ----------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_INLINE_SPACE = re.compile(r"[^\S\n]+")  # any whitespace but a newline, incl. NBSP and tabs
_BLANK_LINES = re.compile(r"\n{3,}")
# Control characters other than tab and newline, and invisible characters
# that would only split words for a tokenizer: soft hyphen, zero-width space,
# word joiner, byte-order mark.
_INVISIBLE = dict.fromkeys(
    [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), 0xAD, 0x200B, 0x2060, 0xFEFF]
)


def clean_text(text: str) -> str:
    """Canonical prose: NFC, spaces collapsed, lines stripped, at most one blank line.

    Single newlines are kept (they carry list and line structure); a blank
    line is the paragraph break the chunker can break on.
    """
    text = normalise(text)
    text = _INLINE_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_code(text: str) -> str:
    """Like clean_text but keeps indentation and inner spacing, which carry meaning in code."""
    lines = normalise(text).expandtabs(4).split("\n")
    return _BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")


def normalise(text: str) -> str:
    """NFC, one kind of line break, no invisible characters."""
    return unify_line_breaks(unicodedata.normalize("NFC", text)).translate(_INVISIBLE)


def unify_line_breaks(text: str) -> str:
    """Every line break (CR LF, CR, form feed, U+2028, ...) as a single "\\n"."""
    return _LINE_BREAKS.sub("\n", text)


def one_line(text: str) -> str:
    """Normalised text with every run of whitespace, newlines included, made one space."""
    return " ".join(normalise(text).split())


def table_row(cells: Iterable[str]) -> str:
    """One table row on one line; trailing empty cells dropped ("" for an empty row)."""
    values = [one_line(cell) for cell in cells]
    while values and not values[-1]:
        values.pop()
    return " | ".join(values) if any(values) else ""


def decode_utf8(content: bytes) -> str:
    """Strict UTF-8 (a BOM allowed): damaged bytes are refused, never replaced silently."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnparseableDocument(
            f"content is not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8"
        ) from None


def refuse_unreadable(name: str, read: Callable[[], T]) -> T:
    """`read()`, with any library error turned into an UnparseableDocument naming the format.

    Parsing libraries raise many exception types on damaged files (zip, XML,
    missing parts, bad numbers); all mean the same thing for the sender, and
    an unexpected one must dead-letter the document, never crash the stage.
    MemoryError passes through: the parser process's cap was reached, which the
    worker reports as such.
    """
    try:
        return read()
    except (IngestionError, MemoryError):
        raise
    except Exception as exc:
        raise UnparseableDocument(f"not a readable {name}: {type(exc).__name__}: {exc}") from None


class SectionBuilder:
    """Collects cleaned blocks and tables under the current heading path."""

    def __init__(self) -> None:
        self._path: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        """Close the current section; `text` replaces the path from `level` down."""
        self._flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        if text:
            self._path.append((level, text))

    def add(self, block: str) -> None:
        if block:
            self._blocks.append(block)

    def table(self, rows: Iterable[Iterable[str]]) -> None:
        """A table as a section of its own under the current heading; empty rows dropped.

        The first non-empty row is taken as the header. A one-row table is no
        table worth keeping together: it is added as an ordinary block.
        """
        lines = [line for line in (table_row(row) for row in rows) if line]
        if len(lines) == 1:
            self.add(lines[0])
        elif lines:
            self._flush()
            self._sections.append(Section(self._heading(), "\n".join(lines), table=True))

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _heading(self) -> str:
        return " > ".join(text for _, text in self._path)

    def _flush(self) -> None:
        # A heading with no text under it yields no section: its words still
        # reach the index through the paths of its subsections.
        if self._blocks:
            self._sections.append(Section(self._heading(), "\n\n".join(self._blocks)))
            self._blocks = []
