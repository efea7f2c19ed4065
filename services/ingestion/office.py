"""Word (DOCX) and PowerPoint (PPTX) -> ParsedDocument, with python-docx and python-pptx.

Word's heading styles ("Heading 1".."Heading 9") give the heading path, as
h1-h6 do in HTML; a slide's title heads its slide, so a chunk is cited by the
slide it came from. Tables become table sections (rows kept whole). Both
libraries' errors on damaged files become one UnparseableDocument naming the
format. Neither library can stream: a file is read whole, which the size
limit on documents bounds.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator

import docx
import pptx
from docx.table import Table as WordTable
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape
from pptx.slide import Slide
from pptx.table import Table as SlideTable

from ingestion.sections import (
    ParsedDocument,
    SectionBuilder,
    clean_text,
    one_line,
    refuse_unreadable,
)

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)


def parse_docx(content: bytes) -> ParsedDocument:
    """Paragraphs and tables in body order; core-properties title, else the Title paragraph."""
    return refuse_unreadable("DOCX", lambda: _read_docx(content))


def parse_pptx(content: bytes) -> ParsedDocument:
    """One section per slide (its title the heading), speaker notes included."""
    return refuse_unreadable("PPTX", lambda: _read_pptx(content))


def _read_docx(content: bytes) -> ParsedDocument:
    document = docx.Document(io.BytesIO(content))
    title = one_line(document.core_properties.title or "")
    sections = SectionBuilder()
    for block in document.iter_inner_content():
        if isinstance(block, WordTable):
            sections.table(_word_rows(block))
            continue
        style = block.style.name if block.style is not None else ""
        level = _HEADING_STYLE.fullmatch(style or "")
        if level:
            sections.heading(int(level[1]), one_line(block.text))
        elif style == "Title":
            title = title or one_line(block.text)
        else:
            sections.add(clean_text(block.text))
    return ParsedDocument(title, sections.finish())


def _word_rows(table: WordTable) -> Iterator[list[str]]:
    """Cell texts per row; a merged cell (python-docx repeats it per grid column) counted once."""
    for row in table.rows:
        cells, previous = [], None
        for cell in row.cells:
            if cell._tc is not previous:
                cells.append(cell.text)
            previous = cell._tc
        yield cells


def _read_pptx(content: bytes) -> ParsedDocument:
    presentation = pptx.Presentation(io.BytesIO(content))
    sections = SectionBuilder()
    first_title = ""
    for number, slide in enumerate(presentation.slides, start=1):
        slide_title = _slide_title(slide)
        first_title = first_title or slide_title
        sections.heading(1, slide_title or f"Slide {number}")
        title_id = slide.shapes.title.shape_id if slide.shapes.title is not None else None
        for shape in _shapes(slide.shapes):
            if shape.shape_id == title_id:
                continue
            if isinstance(shape, Shape) and shape.has_text_frame:
                sections.add(clean_text(shape.text_frame.text))
            elif isinstance(shape, GraphicFrame) and shape.has_table:
                sections.table(_slide_rows(shape.table))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            sections.add(clean_text(slide.notes_slide.notes_text_frame.text))
    title = one_line(presentation.core_properties.title or "") or first_title
    return ParsedDocument(title, sections.finish())


def _slide_title(slide: Slide) -> str:
    shape = slide.shapes.title
    return one_line(shape.text_frame.text) if shape is not None and shape.has_text_frame else ""


def _shapes(shapes: Iterable[BaseShape]) -> Iterator[BaseShape]:
    """Every shape, those inside groups included, in the slide's reading (z-) order."""
    stack = list(reversed(list(shapes)))
    while stack:
        shape = stack.pop()
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP and isinstance(shape, GroupShape):
            stack.extend(reversed(list(shape.shapes)))
        else:
            yield shape


def _slide_rows(table: SlideTable) -> Iterator[list[str]]:
    for row in table.rows:
        yield [cell.text for cell in row.cells if not cell.is_spanned]
