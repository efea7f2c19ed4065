"""Raw bytes of a supported format -> clean text in heading-delimited sections.

Every format ends up as the same shape, `ParsedDocument(title, sections)`, so
chunking, hashing and everything downstream never branch on format. Cleaning
is canonical on purpose: bytes that differ only in markup, line endings,
spacing or Unicode composition clean to the same text, hence the same content
hash, so re-publishing them is a no-op.

Text encoding: the wire contract is UTF-8, and decoding is strict. Invalid
bytes raise UnparseableDocument naming the offset instead of being replaced,
because replacement characters would be indexed silently and the publisher
would never learn the document is damaged. HTML may declare another charset
in a `<meta>` tag, which is honoured because it is part of the content.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token
from pypdf import PasswordType, PdfReader
from selectolax.lexbor import LexborHTMLParser, LexborNode

from ingestion.errors import EmptyDocument, IngestionError, UnparseableDocument
from ingestion.formats import Format


@dataclass(frozen=True, slots=True)
class Section:
    """Text under one heading path, e.g. heading "Install > Linux" ("" before any heading)."""

    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's title ("" if it has none) and its non-empty sections, in order."""

    title: str
    sections: list[Section]


def parse(content: bytes, fmt: Format) -> ParsedDocument:
    """Parse and clean `content`; raise EmptyDocument when nothing indexable is left."""
    if not content.strip():
        raise EmptyDocument("content is empty")
    parsed = _PARSERS[fmt](content)
    if not parsed.sections:
        raise EmptyDocument(f"no text left after parsing the {fmt.name} content and cleaning it")
    return parsed


# --- cleaning ----------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x85\u2028\u2029]")
_INLINE_SPACE = re.compile(r"[^\S\n]+")  # any whitespace but a newline, incl. NBSP and tabs
_BLANK_LINES = re.compile(r"\n{3,}")
_ANY_SPACE = re.compile(r"\s+")
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
    text = _normalise(text)
    text = _INLINE_SPACE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def clean_code(text: str) -> str:
    """Like clean_text but keeps indentation and inner spacing, which carry meaning in code."""
    lines = _normalise(text).expandtabs(4).split("\n")
    return _BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in lines)).strip("\n")


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return _LINE_BREAKS.sub("\n", text).translate(_INVISIBLE)


def _one_line(text: str) -> str:
    return " ".join(_normalise(text).split())


def _decode_utf8(content: bytes) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnparseableDocument(
            f"content is not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8"
        ) from None


class _Sections:
    """Collects cleaned blocks under the current heading path."""

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

    def finish(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        # A heading with no text under it yields no section: its words still
        # reach the index through the paths of its subsections.
        if self._blocks:
            path = " > ".join(text for _, text in self._path)
            self._sections.append(Section(path, "\n\n".join(self._blocks)))
            self._blocks = []


# --- plain text ----------------------------------------------------------------


def _parse_text(content: bytes) -> ParsedDocument:
    sections = _Sections()
    sections.add(clean_text(_decode_utf8(content)))
    return ParsedDocument("", sections.finish())


# --- Markdown ------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# YAML front matter (Jekyll, Hugo, MkDocs): metadata, not content; CommonMark
# would otherwise read its closing `---` as a setext heading.
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _parse_markdown(content: bytes) -> ParsedDocument:
    text = _LINE_BREAKS.sub("\n", _decode_utf8(content))
    title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        text = text[front.end() :]
        declared = _FRONT_MATTER_TITLE.search(front.group(1))
        title = _one_line(declared.group(1).strip("'\"")) if declared else ""
    sections = _Sections()
    tokens = _MARKDOWN.parse(text)
    rows: list[str] = []
    cells: list[str] = []
    for i, token in enumerate(tokens):
        kind = token.type
        if kind == "heading_open":
            heading = _one_line(_inline_text(tokens[i + 1]))
            sections.heading(int(token.tag[1]), heading)
            if not title and token.tag == "h1":
                title = heading
        elif kind == "inline" and tokens[i - 1].type == "paragraph_open":
            sections.add(clean_text(_inline_text(token)))
        elif kind == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            cells.append(_one_line(_inline_text(token)))
        elif kind == "tr_close":
            rows.append(" | ".join(cells))
            cells = []
        elif kind == "table_close":
            sections.add("\n".join(rows))
            rows = []
        elif kind in ("fence", "code_block"):
            sections.add(clean_code(token.content))
        elif kind == "html_block":  # raw HTML is read like an HTML page's body
            _read_html(LexborHTMLParser(token.content).body, sections)
    return ParsedDocument(title, sections.finish())


def _inline_text(inline: Token) -> str:
    """Plain text of an inline token: markup and link URLs dropped, image alt text kept.

    Soft breaks become spaces, so re-wrapping a paragraph changes nothing.
    """
    parts: list[str] = []
    for child in inline.children or ():
        if child.type in ("text", "code_inline", "image"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
    return "".join(parts)


# --- HTML ----------------------------------------------------------------------

_SKIPPED_TAGS = frozenset(
    {"head", "script", "style", "noscript", "template", "svg", "iframe", "nav", "aside"}
)
# Page-level header/footer are site chrome; inside an article they hold its
# title and byline, which are content.
_CHROME_TAGS = frozenset({"header", "footer"})
_CONTENT_TAGS = frozenset({"article", "main", "section"})
_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "caption", "dd", "details", "dialog", "div", "dl",
        "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li",
        "main", "ol", "p", "section", "summary", "table", "tr", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)


class _Paragraph:
    """Inline text of the block being read, with HTML's whitespace rules applied."""

    def __init__(self, sections: _Sections) -> None:
        self._sections = sections
        self._parts: list[str] = []

    def text(self, text: str) -> None:
        self._parts.append(_ANY_SPACE.sub(" ", text))

    def line_break(self) -> None:
        self._parts.append("\n")

    def end(self) -> None:
        self._sections.add(clean_text("".join(self._parts)))
        self._parts = []


def _parse_html(content: bytes) -> ParsedDocument:
    tree = LexborHTMLParser(_decode_html(content))
    sections = _Sections()
    first_h1 = _read_html(tree.body, sections)
    title_node = tree.css_first("title")
    title = _one_line(title_node.text()) if title_node is not None else ""
    return ParsedDocument(title or first_h1, sections.finish())


def _read_html(root: LexborNode | None, sections: _Sections) -> str:
    """Add the text under `root` to `sections`, split at h1-h6; return the first h1's text."""
    first_h1 = ""
    paragraph = _Paragraph(sections)
    # Iterative walk (deeply nested markup must not hit the recursion limit);
    # a None on the stack marks the end of a block element.
    stack: list[LexborNode | None] = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if node is None:
            paragraph.end()
            continue
        tag = node.tag or ""
        if tag == "-text":
            paragraph.text(node.text_content or "")
        elif tag in _SKIPPED_TAGS or (tag in _CHROME_TAGS and not _inside_content(node)):
            continue
        elif tag in _HEADING_LEVELS:
            paragraph.end()
            heading = _one_line(node.text())
            sections.heading(_HEADING_LEVELS[tag], heading)
            first_h1 = first_h1 or (heading if tag == "h1" else "")
        elif tag == "pre":
            paragraph.end()
            sections.add(clean_code(node.text()))
        elif tag == "br":
            paragraph.line_break()
        else:
            if tag in _CELL_TAGS:
                paragraph.text(" ")
            if tag in _BLOCK_TAGS:
                paragraph.end()
                stack.append(None)
            stack.extend(reversed(list(node.iter(include_text=True))))
    paragraph.end()
    return first_h1


def _inside_content(node: LexborNode) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in _CONTENT_TAGS:
            return True
        parent = parent.parent
    return False


def _decode_html(content: bytes) -> str:
    """UTF-8 if it is valid UTF-8, else the charset the page declares in `<meta>`."""
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        declared = _META_CHARSET.search(content[:4096])
        if declared is None:
            raise UnparseableDocument(
                "HTML is not valid UTF-8 and declares no charset in a <meta> tag"
            ) from None
    charset = declared.group(1).decode("ascii")
    try:
        return content.decode(codecs.lookup(charset).name)
    except (LookupError, UnicodeDecodeError) as exc:
        raise UnparseableDocument(f"HTML does not decode as its {charset}: {exc}") from None


# --- PDF -----------------------------------------------------------------------

# A word broken across lines by a hyphen: "hyphen-\nation" -> "hyphenation".
# Only before a lowercase letter, so "e-\nMail" and "1998-\n2004" stay intact.
_LINE_END_HYPHEN = re.compile(r"(?<=[^\W\d_])-\n(?=[a-zà-öø-ÿ])")


def _parse_pdf(content: bytes) -> ParsedDocument:
    """One section per page, headed "Page N", so a chunk can be cited by page."""
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise UnparseableDocument("PDF is encrypted with a password")
        pages = [page.extract_text() for page in reader.pages]
        metadata = reader.metadata
        title = _one_line(metadata.title or "") if metadata is not None else ""
    except IngestionError:
        raise
    except Exception as exc:
        # pypdf raises many exception types on damaged files (PdfReadError,
        # ValueError, KeyError, ...); all mean the same thing for the sender.
        raise UnparseableDocument(f"not a readable PDF: {type(exc).__name__}: {exc}") from None
    sections = _Sections()
    for number, page_text in enumerate(pages, start=1):
        sections.heading(1, f"Page {number}")
        sections.add(clean_text(_LINE_END_HYPHEN.sub("", _normalise(page_text))))
    found = sections.finish()
    if not found:
        raise EmptyDocument(
            f"PDF has {len(pages)} page(s) but no extractable text (scanned images need OCR)"
        )
    return ParsedDocument(title, found)


_PARSERS: dict[Format, Callable[[bytes], ParsedDocument]] = {
    Format.TEXT: _parse_text,
    Format.MARKDOWN: _parse_markdown,
    Format.HTML: _parse_html,
    Format.PDF: _parse_pdf,
}
