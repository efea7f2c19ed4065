"""Ingestion's parsing side: format detection, size limits, parsing and cleaning, content hash."""

from __future__ import annotations

import random

import pytest
from fpdf import FPDF

from ingestion.errors import (
    DocumentTooLarge,
    EmptyDocument,
    IngestionError,
    UnparseableDocument,
    UnsupportedFormat,
)
from ingestion.formats import Format, detect_format
from ingestion.hashing import content_hash
from ingestion.limits import check_size
from ingestion.parsing import ParsedDocument, Section, parse
from llmops.v1 import documents_pb2

PDF_BYTES = b"%PDF-1.7\n..."
HTML_BYTES = b"<!DOCTYPE html><html><body><p>x</p></body></html>"


# --- format detection ---------------------------------------------------------------


def test_format_values_are_the_proto_enum_numbers() -> None:
    for fmt in Format:
        assert fmt.value == documents_pb2.DocumentFormat.Value(f"DOCUMENT_FORMAT_{fmt.name}")


def test_explicit_format_beats_mime_type_extension_and_content() -> None:
    fmt = detect_format(documents_pb2.DOCUMENT_FORMAT_MARKDOWN, "text/html", "a.pdf", PDF_BYTES)
    assert fmt is Format.MARKDOWN


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/plain; charset=utf-8", Format.TEXT),
        ("Text/Markdown", Format.MARKDOWN),
        ("text/html;charset=ISO-8859-1", Format.HTML),
        ("application/pdf", Format.PDF),
        ("text/csv", Format.CSV),
        ("text/x-log", Format.TEXT),  # any other text/* is plain text
    ],
)
def test_mime_type_beats_extension_and_content(content_type: str, expected: Format) -> None:
    assert detect_format(0, content_type, "notes.htm", PDF_BYTES) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("docs/guide.MD", Format.MARKDOWN),
        ("/srv/readme.markdown", Format.MARKDOWN),
        ("notes.txt", Format.TEXT),
        ("notes.text", Format.TEXT),
        ("https://example.com/page.htm?x=1.pdf#top", Format.HTML),
        ("report.html", Format.HTML),
        ("s3://bucket/report.PDF", Format.PDF),
    ],
)
def test_extension_beats_content(source: str, expected: Format) -> None:
    content = HTML_BYTES if expected is not Format.HTML else PDF_BYTES
    assert detect_format(0, "application/octet-stream", source, content) is expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", Format.PDF),
        (b"\n\n  %PDF-1.7", Format.PDF),
        (b"\xef\xbb\xbf  <!doctype html><title>t</title>", Format.HTML),
        (b"<HTML><body>hi</body></HTML>", Format.HTML),
    ],
)
def test_content_is_sniffed_last(content: bytes, expected: Format) -> None:
    assert detect_format(0, "", "https://example.com/download", content) is expected


def test_unknown_format_is_refused_with_what_was_seen() -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        detect_format(0, "application/msword", "letter.doc", b"\xd0\xcf\x11\xe0")
    assert caught.value.reason.startswith("unsupported_format: ")
    assert "application/msword" in caught.value.reason
    assert "letter.doc" in caught.value.reason


def test_unknown_format_number_is_refused() -> None:
    with pytest.raises(UnsupportedFormat, match="unknown format value 99"):
        detect_format(99, "text/plain", "a.txt", b"hello")


# --- errors and limits --------------------------------------------------------------


def test_reason_is_one_line_prefixed_with_its_code() -> None:
    error: IngestionError = UnparseableDocument("bad\r\nthing\there")
    assert error.reason == "unparseable_document: bad thing here"


def test_check_size_accepts_the_limit_and_refuses_more() -> None:
    check_size(100, 100)
    with pytest.raises(DocumentTooLarge) as caught:
        check_size(101, 100)
    assert "101 bytes" in caught.value.reason
    assert "100 bytes" in caught.value.reason


# --- plain text ---------------------------------------------------------------------


def test_text_is_cleaned_but_keeps_paragraphs() -> None:
    raw = (
        "\ufeff  Caf\u0065\u0301  costs\t\u00a0 3\u00a0\u20ac.\x00\r\n"
        "second  line\u200b here\r\n\r\n\r\n\r\n"
        "Next para\u00adgraph.  \n"
    )
    parsed = parse(raw.encode(), Format.TEXT)
    assert parsed == ParsedDocument(
        "", [Section("", "Caf\u00e9 costs 3 \u20ac.\nsecond line here\n\nNext paragraph.")]
    )


def test_text_must_be_utf8() -> None:
    with pytest.raises(UnparseableDocument, match="offset 6"):
        parse(b"hello \xff world", Format.TEXT)


# --- Markdown -----------------------------------------------------------------------

MARKDOWN = b"""\
Preamble before any heading.

# Guide

Welcome to *the* **guide**; see [the docs](https://example.com/docs) and ![a diagram](d.png).
This line was soft-wrapped.

## Install

Run `pip install llmops` first.

```python
def main():
    return  1
```

### Linux

Linux needs ~~nothing~~ glibc.

- apt works
- so does dnf

### macOS

| tool | version |
|------|---------|
| brew | 4.0     |

## Usage

Usage text.<br>
<div class="note">Raw <b>HTML</b> note.<!-- hidden comment --><script>MD_SCRIPT()</script></div>
<details><summary>More</summary><p>Folded detail.</p></details>

# Reference

Reference text.
"""


def test_markdown_sections_follow_the_nested_heading_path() -> None:
    parsed = parse(MARKDOWN, Format.MARKDOWN)
    assert parsed.title == "Guide"
    assert [section.heading for section in parsed.sections] == [
        "",
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Install > macOS",
        "Guide > Usage",
        "Reference",
    ]


def test_markdown_markup_is_dropped_and_code_kept_verbatim() -> None:
    texts = {section.heading: section.text for section in parse(MARKDOWN, Format.MARKDOWN).sections}
    assert texts["Guide"] == (
        "Welcome to the guide; see the docs and a diagram. This line was soft-wrapped."
    )
    assert texts["Guide > Install"] == (
        "Run pip install llmops first.\n\ndef main():\n    return  1"
    )
    assert (
        texts["Guide > Install > Linux"] == "Linux needs nothing glibc.\n\napt works\n\nso does dnf"
    )
    assert texts["Guide > Install > macOS"] == "tool | version\nbrew | 4.0"
    assert texts["Guide > Usage"] == "Usage text.\n\nRaw HTML note.\n\nMore\n\nFolded detail."
    assert "https://" not in "".join(texts.values())


def test_markdown_front_matter_is_metadata_not_content() -> None:
    text = b'---\ntitle: "Release notes"\ndraft: true\n---\nIntro.\n# First\n\nBody.\n'
    assert parse(text, Format.MARKDOWN) == ParsedDocument(
        "Release notes", [Section("", "Intro."), Section("First", "Body.")]
    )


# --- HTML ---------------------------------------------------------------------------

HTML = b"""<!DOCTYPE html>
<html><head><title>  Ops   Handbook </title>
<style>.x { color: red } STYLE_NOISE</style><script>var SCRIPT_NOISE = 1;</script></head>
<body>
<header><a href="/">HEADER_NOISE</a></header>
<nav><ul><li>NAV_NOISE</li></ul></nav>
<aside>ASIDE_NOISE</aside><noscript>NOSCRIPT_NOISE</noscript>
<main><article>
  <header><h1>On-call</h1><p>By the SRE team</p></header>
  <p>Pages   go to
     the <em>primary</em>.<br>Then the secondary.</p>
  <h2>Escalation</h2>
  <ol><li>Ack within 5 minutes</li><li>Mitigate</li></ol>
  <pre>  kubectl rollout undo
    deploy/api</pre>
  <h3>Severity</h3>
  <table><tr><th>Level</th><th>Meaning</th></tr><tr><td>SEV1</td><td>Outage</td></tr></table>
  <h2>Handover</h2><div>Write <a href="https://wiki">notes</a>.<script>SCRIPT_NOISE()</script></div>
</article></main>
<footer>FOOTER_NOISE &copy; 2025</footer>
</body></html>
"""


def test_html_noise_never_reaches_the_text() -> None:
    parsed = parse(HTML, Format.HTML)
    everything = " ".join(f"{s.heading} {s.text}" for s in parsed.sections) + parsed.title
    for noise in ("STYLE", "SCRIPT", "HEADER", "NAV", "ASIDE", "NOSCRIPT", "FOOTER"):
        assert f"{noise}_NOISE" not in everything
    assert "color: red" not in everything


def test_html_splits_by_headings_and_keeps_block_structure() -> None:
    parsed = parse(HTML, Format.HTML)
    assert parsed.title == "Ops Handbook"
    assert parsed.sections == [
        Section("On-call", "By the SRE team\n\nPages go to the primary.\nThen the secondary."),
        Section(
            "On-call > Escalation",
            "Ack within 5 minutes\n\nMitigate\n\n  kubectl rollout undo\n    deploy/api",
        ),
        Section("On-call > Escalation > Severity", "Level | Meaning\nSEV1 | Outage", table=True),
        Section("On-call > Handover", "Write notes."),
    ]


def test_html_title_falls_back_to_the_first_h1() -> None:
    parsed = parse(b"<p>Lead.</p><h2>Sub</h2><p>a</p><h1>Main</h1><p>b</p>", Format.HTML)
    assert parsed.title == "Main"
    assert [s.heading for s in parsed.sections] == ["", "Sub", "Main"]


def test_html_declared_charset_is_honoured() -> None:
    page = '<html><head><meta charset="windows-1252"></head><body><p>\u201cna\u00efve\u201d</p>'
    parsed = parse(page.encode("cp1252"), Format.HTML)
    assert parsed.sections == [Section("", "\u201cna\u00efve\u201d")]


def test_html_that_is_not_utf8_and_declares_nothing_is_refused() -> None:
    with pytest.raises(UnparseableDocument, match="charset"):
        parse(b"<p>caf\xe9</p>", Format.HTML)


# --- PDF ----------------------------------------------------------------------------


def _pdf(pages: list[str], title: str = "", user_password: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner", user_password=user_password)
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def test_pdf_pages_become_sections() -> None:
    pages = [
        "Page one explains the architecture of the platform.",
        "Page two covers ingestion: every docu-\nment is parsed, cleaned and chunked.",
        "Page three lists the metrics.",
    ]
    parsed = parse(_pdf(pages, title="Platform Guide"), Format.PDF)
    assert parsed.title == "Platform Guide"
    assert [s.heading for s in parsed.sections] == ["Page 1", "Page 2", "Page 3"]
    assert parsed.sections[0].text == pages[0]
    assert "every document is parsed" in parsed.sections[1].text  # de-hyphenated
    assert parsed.sections[2].text == pages[2]


def test_pdf_pages_without_text_are_skipped() -> None:
    parsed = parse(_pdf(["First.", "", "Third."]), Format.PDF)
    assert [s.heading for s in parsed.sections] == ["Page 1", "Page 3"]


@pytest.mark.parametrize(
    "content",
    [b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", b"not a pdf at all"],
    ids=["garbage", "no-header"],
)
def test_corrupt_pdf_is_unparseable(content: bytes) -> None:
    with pytest.raises(UnparseableDocument, match="not a readable PDF"):
        parse(content, Format.PDF)


def test_truncated_pdf_is_unparseable() -> None:
    whole = _pdf(["Some text that will be cut off."])
    with pytest.raises(UnparseableDocument):
        parse(whole[: len(whole) // 2], Format.PDF)


def test_damaged_pdfs_never_escape_as_other_errors() -> None:
    # pypdf raises many exception types on damaged input; the service must
    # only ever see IngestionError (a dead letter), never a crash.
    whole = bytearray(_pdf(["Intact text on a page.", "Another page."]))
    rng = random.Random(11)
    outcomes = set()
    for _ in range(60):
        damaged = bytearray(whole)
        for _ in range(rng.randint(1, 12)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            parse(bytes(damaged), Format.PDF)
            outcomes.add("parsed")
        except IngestionError as error:
            outcomes.add(error.code)
    assert "unparseable_document" in outcomes


def test_password_protected_pdf_is_unparseable() -> None:
    with pytest.raises(UnparseableDocument, match="encrypted"):
        parse(_pdf(["Secret."], user_password="s3cret"), Format.PDF)


def test_pdf_encrypted_without_a_user_password_is_read() -> None:
    parsed = parse(_pdf(["Readable by anyone."], user_password=""), Format.PDF)
    assert parsed.sections == [Section("Page 1", "Readable by anyone.")]


def test_pdf_without_any_text_is_empty() -> None:
    with pytest.raises(EmptyDocument, match="OCR"):
        parse(_pdf(["", ""]), Format.PDF)


# --- empty documents ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"", Format.TEXT),
        (b"", Format.PDF),
        (b" \r\n\t ", Format.MARKDOWN),
        (b" \r\n\t ", Format.PDF),
        ("\x00\x07 \u200b\u00a0\n".encode(), Format.TEXT),
        (b"# Only\n## Headings\n", Format.MARKDOWN),
        (b"<html><script>x()</script><nav>menu</nav></html>", Format.HTML),
    ],
)
def test_nothing_left_after_cleaning_is_an_empty_document(content: bytes, fmt: Format) -> None:
    with pytest.raises(EmptyDocument) as caught:
        parse(content, fmt)
    assert caught.value.reason.startswith("empty_document: ")


# --- content hash -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "fmt"),
    [
        (b"Hello   world.\r\nBye.\r\n", b"\xef\xbb\xbfHello world.\nBye.", Format.TEXT),
        ("Cafe\u0301 ok.".encode(), "Caf\u00e9 ok.".encode(), Format.TEXT),
        (b"# T\n\nSome *very* **bold** text\nwrapped.", b"# T\nSome very bold text wrapped.\n",
         Format.MARKDOWN),
        (b"<h1>T</h1><p>A  <b>b</b></p>", b"<html>\n<h1> T </h1>\n<p>\nA\n<i>b</i>\n</p>",
         Format.HTML),
    ],
)  # fmt: skip
def test_content_hash_ignores_what_cleaning_removes(
    first: bytes, second: bytes, fmt: Format
) -> None:
    assert first != second
    assert content_hash(parse(first, fmt)) == content_hash(parse(second, fmt))


@pytest.mark.parametrize(
    "changed",
    [
        ParsedDocument("Title", [Section("Intro", "Body text!")]),
        ParsedDocument("Title", [Section("Intro!", "Body text.")]),
        ParsedDocument("Title!", [Section("Intro", "Body text.")]),
        ParsedDocument("Title", [Section("Intro", "Body"), Section("", "text.")]),
        ParsedDocument("Title", [Section("Intro", "Body text."), Section("", "x")]),
    ],
)
def test_content_hash_changes_with_any_text_heading_or_title(changed: ParsedDocument) -> None:
    base = ParsedDocument("Title", [Section("Intro", "Body text.")])
    assert content_hash(changed) != content_hash(base)


def test_content_hash_is_stable_across_releases() -> None:
    # Pinned: if cleaning or hashing changes, every stored document looks
    # changed and is re-embedded once. Update deliberately, never casually.
    parsed = parse(b"# Intro\n\nBody  text.\n", Format.MARKDOWN)
    assert content_hash(parsed) == (
        "db986a245f0118609e78efe4586d39e4b8ddf479968596c36507459ac4421a19"
    )
