"""DOCX, PPTX, XLSX, CSV, JSON and EML: detection and parsing of real sample files.

The samples are written by the libraries teams use (tests/data/formats/make_samples.py);
each damaged variant must be refused with a reason, never crash the stage.
"""

from __future__ import annotations

import io
import mimetypes
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from ingestion.errors import EmptyDocument, UnparseableDocument, UnsupportedFormat
from ingestion.formats import FORMAT_UNSPECIFIED, Format, detect_format
from ingestion.parsing import ParsedDocument, Section, parse
from llmops.v1 import documents_pb2

SAMPLES = Path(__file__).parents[1] / "data" / "formats"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def parsed(name: str) -> ParsedDocument:
    content = sample(name)
    return parse(content, detect_format(FORMAT_UNSPECIFIED, "", name, content))


def by_heading(doc: ParsedDocument) -> dict[tuple[str, bool], str]:
    return {(section.heading, section.table): section.text for section in doc.sections}


# --- detection -------------------------------------------------------------------


FILES = {
    "boiler-manual.docx": Format.DOCX,
    "quarterly-review.pptx": Format.PPTX,
    "inventory.xlsx": Format.XLSX,
    "coffee-prices.csv": Format.CSV,
    "release-notes.json": Format.JSON,
    "grinder-repair.eml": Format.EML,
}


@pytest.mark.parametrize(("name", "fmt"), FILES.items())
def test_each_format_is_told_by_its_mime_type_and_by_its_extension(name: str, fmt: Format) -> None:
    mime = mimetypes.guess_type(name)[0]
    assert mime is not None
    content = sample(name)
    assert detect_format(FORMAT_UNSPECIFIED, f"{mime}; charset=utf-8", "", content) is fmt
    assert detect_format(FORMAT_UNSPECIFIED, "application/octet-stream", name, content) is fmt
    assert detect_format(fmt.value, "", "", b"") is fmt
    assert fmt.value == documents_pb2.DocumentFormat.Value(f"DOCUMENT_FORMAT_{fmt.name}")


@pytest.mark.parametrize(("name", "fmt"), list(FILES.items())[:3])
def test_office_files_are_told_apart_by_their_content_types_part(name: str, fmt: Format) -> None:
    assert detect_format(FORMAT_UNSPECIFIED, "", "upload.bin", sample(name)) is fmt


def test_a_zip_that_is_no_office_file_is_unsupported() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(UnsupportedFormat, match="cannot tell the format"):
        detect_format(FORMAT_UNSPECIFIED, "", "", buffer.getvalue())


def test_any_json_suffix_type_is_json() -> None:
    assert detect_format(FORMAT_UNSPECIFIED, "application/ld+json", "", b"{}") is Format.JSON


# --- parsing the samples ---------------------------------------------------------


def test_docx_headings_paragraphs_and_tables() -> None:
    doc = parsed("boiler-manual.docx")
    assert doc.title == "Vireo Boiler Service Manual"
    texts = by_heading(doc)
    assert "every 18 months" in texts[("Annual maintenance", False)]
    assert texts[("Annual maintenance > Pressure", False)].startswith("The system pressure")
    assert texts[("Spare parts", False)] == "Keep these parts in the van:"
    assert texts[("Spare parts", True)].split("\n")[:2] == [
        "Part | Code | Stock | Bin",
        "Ignition electrode | VB-1021 | 12 | A3",
    ]


def test_pptx_slide_titles_are_headings_and_notes_and_tables_are_read() -> None:
    doc = parsed("quarterly-review.pptx")
    assert doc.title == "Logistics quarterly review"
    assert [s.heading for s in doc.sections] == [
        "Logistics quarterly review",
        "Warehouse expansion",
        "On-time deliveries",
    ]
    expansion = by_heading(doc)[("Warehouse expansion", False)]
    assert "Rotterdam warehouse opens in March with 40 loading docks" in expansion
    assert "fire inspection passed" in expansion  # speaker notes
    assert "Warehouse expansion" not in expansion  # the title is the heading, not text
    assert by_heading(doc)[("On-time deliveries", True)] == (
        "Region | On time | Late\nNorth | 97% | 3%\nSouth | 91% | 9%"
    )


def test_xlsx_each_sheet_is_a_table_under_its_name() -> None:
    doc = parsed("inventory.xlsx")
    assert doc.title == "Workshop inventory"
    assert [(s.heading, s.table) for s in doc.sections] == [("Tools", True), ("Suppliers", True)]
    tools = doc.sections[0].text.split("\n")
    assert tools[0] == "SKU | Item | Quantity | Unit price | Last counted"
    # whole numbers without ".0", dates in ISO 8601 without a midnight time
    assert tools[1] == "KX-7734 | Titanium torque wrench | 14 | 89.5 | 2025-02-03"
    assert tools[2] == "KX-1180 | Digital caliper 150 mm | 31 | 24 | 2025-02-03"


def test_csv_is_one_table_and_its_delimiter_is_sniffed() -> None:
    doc = parsed("coffee-prices.csv")
    assert [s.table for s in doc.sections] == [True]
    rows = doc.sections[0].text.split("\n")
    assert rows[0] == "Coffee | Origin | Process | Price per kg (EUR)"
    assert len(rows) == 13
    semicolons = b'name;city\n"Ana; Jr.";Lisbon\nBo;Oslo\n'
    assert parse(semicolons, Format.CSV).sections == [
        Section("", "name | city\nAna; Jr. | Lisbon\nBo | Oslo", table=True)
    ]


def test_json_fields_become_lines_and_records_a_table() -> None:
    doc = parsed("release-notes.json")
    assert doc.title == "Ledgerline 4.2 release notes"
    texts = by_heading(doc)
    assert "version: 4.2.0" in texts[("", False)]
    assert texts[("changes", False)].split("\n")[0] == (
        "fixed[0]: Exports to Parquet no longer drop the timezone offset of timestamps."
    )
    assert texts[("maintainers", True)].split("\n")[0] == "name | role | team"
    assert parse(b'[1, "two", null, {"a": {"b": true}}]', Format.JSON).sections == [
        Section("", "[0]: 1\n[1]: two\n[3].a.b: true")
    ]


def test_eml_headers_body_and_attachments() -> None:
    doc = parsed("grinder-repair.eml")
    assert doc.title == "Repair of espresso grinder EG-64"
    [section] = doc.sections
    assert section.text.startswith("From: Dana Whitfield <dana@roastery.example>\n")
    assert "collect the damaged espresso grinder on Thursday" in section.text
    assert "Burr set" not in section.text  # attachments are documents of their own
    assert [(a.filename, a.content_type) for a in doc.attachments] == [
        ("repair-quote.csv", "text/csv"),
        ("x.png", "image/png"),
    ]
    assert doc.attachments[0].content.startswith(b"Item,Cost (EUR)\n")


def test_eml_html_body_is_read_like_a_page() -> None:
    message = EmailMessage()
    message["Subject"] = "Menu"
    message.set_content("<h1>Lunch</h1><p>Soup of the day: lentil.</p><script>x()</script>", "html")
    doc = parse(bytes(message), Format.EML)
    assert doc.sections[1:] == [Section("Lunch", "Soup of the day: lentil.")]


def test_html_and_markdown_tables_are_table_sections() -> None:
    html = b"<h2>Fees</h2><table><caption>2025</caption><thead><tr><th>Plan</th><th>EUR</th>"
    html += b"</tr></thead><tbody><tr><td>Basic</td><td>5</td></tr></tbody></table><p>After.</p>"
    assert parse(html, Format.HTML).sections == [
        Section("Fees", "2025"),
        Section("Fees", "Plan | EUR\nBasic | 5", table=True),
        Section("Fees", "After."),
    ]
    markdown = b"# Fees\n\n| Plan | EUR |\n|---|---|\n| Basic | 5 |\n| Pro | 9 |\n"
    assert parse(markdown, Format.MARKDOWN).sections == [
        Section("Fees", "Plan | EUR\nBasic | 5\nPro | 9", table=True)
    ]


# --- damaged files ---------------------------------------------------------------


def _truncated(name: str) -> bytes:
    return sample(name)[:2000]


@pytest.mark.parametrize(
    ("content", "fmt", "reason"),
    [
        (lambda: _truncated("boiler-manual.docx"), Format.DOCX, "not a readable DOCX"),
        (lambda: sample("inventory.xlsx"), Format.DOCX, "not a readable DOCX"),
        (lambda: _truncated("quarterly-review.pptx"), Format.PPTX, "not a readable PPTX"),
        (lambda: b"PK\x03\x04 not really a zip", Format.PPTX, "not a readable PPTX"),
        (lambda: _truncated("inventory.xlsx"), Format.XLSX, "not a readable XLSX"),
        (lambda: b"%PDF-1.4 a pdf, not a workbook", Format.XLSX, "not a readable XLSX"),
        (lambda: b"a,b\n\xff\xfe,2\n", Format.CSV, "not valid UTF-8"),
        (lambda: b'a,b\n"never closed,2\n' + b"x" * 200_000, Format.CSV, "not a readable CSV"),
        (lambda: b'{"a": [1, 2', Format.JSON, "not valid JSON: .* line 1 column"),
        (lambda: b"[" * 100_000 + b"]" * 100_000, Format.JSON, "nested too deeply"),
        (lambda: b"just a line of words\nand another\n", Format.EML, "not an e-mail"),
    ],
)
def test_damaged_files_are_refused_with_a_reason(content: object, fmt: Format, reason: str) -> None:
    assert callable(content)
    with pytest.raises(UnparseableDocument, match=reason) as caught:
        parse(content(), fmt)
    assert caught.value.reason.startswith("unparseable_document: ")
    assert "\n" not in caught.value.reason


def test_an_empty_sheet_is_an_empty_document() -> None:
    with pytest.raises(EmptyDocument):
        parse(b"\n\n,,\n", Format.CSV)
