"""Raw bytes of a supported format -> clean text in heading-delimited sections.

Every format ends up as the same shape, `ParsedDocument(title, sections)`
(ingestion.sections), so chunking, hashing and everything downstream never
branch on format. Text, Markdown, HTML and PDF are parsed here; the office
formats, tables, JSON and e-mail in modules of their own. Cleaning
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
from collections.abc import Callable
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from selectolax.lexbor import LexborHTMLParser, LexborNode

from ingestion import jsondoc, mail, office, pdf, tables
from ingestion.errors import EmptyDocument, UnparseableDocument
from ingestion.formats import Format
from ingestion.sections import (
    ParsedDocument,
    Section,
    SectionBuilder,
    clean_code,
    clean_text,
    decode_utf8,
    one_line,
    unify_line_breaks,
)

__all__ = ["ParsedDocument", "Section", "clean_code", "clean_text", "parse", "parse_file"]


def parse(content: bytes, fmt: Format) -> ParsedDocument:
    """Parse and clean `content`; raise EmptyDocument when nothing indexable is left."""
    if not content.strip():
        raise EmptyDocument("content is empty")
    return _checked(_PARSERS[fmt](content), fmt)


def parse_file(path: Path, fmt: Format) -> ParsedDocument:
    """Parse a spooled file: a PDF is read page by page from disk (a 200 MB PDF never sits
    in memory whole); the other formats are read whole, under the worker's memory cap."""
    if fmt is not Format.PDF:
        return parse(path.read_bytes(), fmt)
    if path.stat().st_size == 0:
        raise EmptyDocument("content is empty")
    with path.open("rb") as stream:
        return _checked(pdf.parse_pdf(stream), fmt)


def _checked(parsed: ParsedDocument, fmt: Format) -> ParsedDocument:
    if not parsed.sections:
        raise EmptyDocument(f"no text left after parsing the {fmt.name} content and cleaning it")
    return parsed


# --- plain text ----------------------------------------------------------------


def _parse_text(content: bytes) -> ParsedDocument:
    sections = SectionBuilder()
    sections.add(clean_text(decode_utf8(content)))
    return ParsedDocument("", sections.finish())


# --- Markdown ------------------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
# YAML front matter (Jekyll, Hugo, MkDocs): metadata, not content; CommonMark
# would otherwise read its closing `---` as a setext heading.
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def _parse_markdown(content: bytes) -> ParsedDocument:
    text = unify_line_breaks(decode_utf8(content))
    title = ""
    front = _FRONT_MATTER.match(text)
    if front:
        text = text[front.end() :]
        declared = _FRONT_MATTER_TITLE.search(front.group(1))
        title = one_line(declared.group(1).strip("'\"")) if declared else ""
    sections = SectionBuilder()
    tokens = _MARKDOWN.parse(text)
    rows: list[list[str]] = []
    cells: list[str] = []
    for i, token in enumerate(tokens):
        kind = token.type
        if kind == "heading_open":
            heading = one_line(_inline_text(tokens[i + 1]))
            sections.heading(int(token.tag[1]), heading)
            if not title and token.tag == "h1":
                title = heading
        elif kind == "inline" and tokens[i - 1].type == "paragraph_open":
            sections.add(clean_text(_inline_text(token)))
        elif kind == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            cells.append(_inline_text(token))
        elif kind == "tr_close":
            rows.append(cells)
            cells = []
        elif kind == "table_close":
            sections.table(rows)
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
        "main", "ol", "p", "section", "summary", "ul",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})
_ROW_GROUP_TAGS = frozenset({"thead", "tbody", "tfoot"})
_ANY_SPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)


class _Paragraph:
    """Inline text of the block being read, with HTML's whitespace rules applied."""

    def __init__(self, sections: SectionBuilder) -> None:
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
    sections = SectionBuilder()
    first_h1 = _read_html(tree.body, sections)
    title_node = tree.css_first("title")
    title = one_line(title_node.text()) if title_node is not None else ""
    return ParsedDocument(title or first_h1, sections.finish())


def _read_html(root: LexborNode | None, sections: SectionBuilder) -> str:
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
            heading = one_line(node.text())
            sections.heading(_HEADING_LEVELS[tag], heading)
            first_h1 = first_h1 or (heading if tag == "h1" else "")
        elif tag == "pre":
            paragraph.end()
            sections.add(clean_code(node.text()))
        elif tag == "br":
            paragraph.line_break()
        elif tag == "table":
            paragraph.end()
            _read_table(node, sections)
        else:
            if tag in _BLOCK_TAGS:
                paragraph.end()
                stack.append(None)
            stack.extend(reversed(list(node.iter(include_text=True))))
    paragraph.end()
    return first_h1


def _read_table(table: LexborNode, sections: SectionBuilder) -> None:
    """The table's caption as a block, then its rows (not those of tables nested in cells)."""
    rows: list[list[str]] = []
    for child in table.iter():
        if child.tag == "caption":
            sections.add(one_line(_visible_text(child)))
        elif child.tag == "tr":
            rows.append(_cells(child))
        elif child.tag in _ROW_GROUP_TAGS:
            rows.extend(_cells(row) for row in child.iter() if row.tag == "tr")
    sections.table(rows)


def _cells(row: LexborNode) -> list[str]:
    return [_visible_text(cell) for cell in row.iter() if cell.tag in _CELL_TAGS]


def _visible_text(root: LexborNode) -> str:
    """Text under `root` without what a reader never sees (scripts, styles, ...)."""
    parts: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.tag == "-text":
            parts.append(node.text_content or "")
        elif node.tag not in _SKIPPED_TAGS:
            parts.append(" ")
            stack.extend(reversed(list(node.iter(include_text=True))))
    return "".join(parts)


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


_PARSERS: dict[Format, Callable[[bytes], ParsedDocument]] = {
    Format.TEXT: _parse_text,
    Format.MARKDOWN: _parse_markdown,
    Format.HTML: _parse_html,
    Format.PDF: lambda content: pdf.parse_pdf(io.BytesIO(content)),
    Format.DOCX: office.parse_docx,
    Format.PPTX: office.parse_pptx,
    Format.XLSX: tables.parse_xlsx,
    Format.CSV: tables.parse_csv,
    Format.JSON: jsondoc.parse_json,
    Format.EML: lambda content: mail.parse_eml(content, _parse_html),
}
