"""CSV and Excel (XLSX) -> table sections whose first row is the header.

A CSV file is one table; a workbook is one table per sheet, headed by the
sheet's name, so a chunk says which sheet it came from. Each row stays whole
in one chunk and the header is repeated in every chunk (ingestion.chunking).
The workbook is read with openpyxl in read-only mode, which streams rows
from the zip instead of building every cell object in memory.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time

import openpyxl

from ingestion.errors import UnparseableDocument
from ingestion.sections import (
    ParsedDocument,
    SectionBuilder,
    decode_utf8,
    one_line,
    refuse_unreadable,
)

_SNIFF_CHARS = 64 * 1024
_DELIMITERS = ",;\t|"


def parse_csv(content: bytes) -> ParsedDocument:
    """UTF-8 CSV with the delimiter sniffed (",", ";", tab or "|"), the first row its header."""
    text = decode_utf8(content)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:_SNIFF_CHARS], delimiters=_DELIMITERS
        )
    except csv.Error:  # one column, or too irregular to tell: the standard dialect
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    sections = SectionBuilder()
    try:
        sections.table(reader)
    except csv.Error as exc:
        raise UnparseableDocument(f"not a readable CSV: line {reader.line_num}: {exc}") from None
    return ParsedDocument("", sections.finish())


def parse_xlsx(content: bytes) -> ParsedDocument:
    """Each worksheet a table under its sheet name; the title from the workbook's properties."""
    return refuse_unreadable("XLSX", lambda: _read_xlsx(content))


def _read_xlsx(content: bytes) -> ParsedDocument:
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    try:
        sections = SectionBuilder()
        for sheet in workbook.worksheets:
            sections.heading(1, one_line(sheet.title))
            sections.table(map(_cell_text, row) for row in sheet.iter_rows(values_only=True))
        title = one_line(workbook.properties.title or "")
    finally:
        workbook.close()  # read-only mode keeps the archive open until closed
    return ParsedDocument(title, sections.finish())


def _cell_text(value: object) -> str:
    """A cell's value as a reader would type it: dates in ISO 8601, no "None".

    Formulas read as the value Excel cached when it last saved the file
    (`data_only`); a formula never computed reads as empty.
    """
    if value is None:
        return ""
    if isinstance(value, datetime) and value.time() == time():
        return value.date().isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
