"""PDF -> one section per page, read from a file object so large PDFs stay on disk.

pypdf reads objects on demand from the stream it is given (a path would make it
read the whole file into memory first), so pages are extracted one at a time.
A page with no text layer (a scan) is OCR'd from its images when tesseract is
installed (ingestion.ocr); otherwise it is left out and the document says so
in its warnings, or is refused as empty when no page has text.
"""

from __future__ import annotations

import re
from itertools import groupby
from typing import BinaryIO

from pypdf import PageObject, PasswordType, PdfReader

from ingestion.errors import EmptyDocument, UnparseableDocument
from ingestion.ocr import OcrConfig, OcrFailed, OcrUnavailable, Tesseract
from ingestion.sections import (
    ParsedDocument,
    SectionBuilder,
    clean_text,
    normalise,
    one_line,
    refuse_unreadable,
)

# A word broken across lines by a hyphen: "hyphen-\nation" -> "hyphenation".
# Only before a lowercase letter, so "e-\nMail" and "1998-\n2004" stay intact.
_LINE_END_HYPHEN = re.compile(r"(?<=[^\W\d_])-\n(?=[a-zà-öø-ÿ])")
_OCRD = "OCR'd"


def parse_pdf(stream: BinaryIO, ocr: OcrConfig | None = None) -> ParsedDocument:
    """One section per page, headed "Page N", so a chunk can be cited by page.

    `ocr` says whether scanned pages are OCR'd; by default the LLMOPS_OCR*
    environment, since the worker process that parses has no settings object.
    """
    scans = _ScannedPages(ocr or OcrConfig.from_environment())
    return refuse_unreadable("PDF", lambda: _parse(stream, scans))


def _parse(stream: BinaryIO, scans: _ScannedPages) -> ParsedDocument:
    reader = PdfReader(stream)
    if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
        raise UnparseableDocument("PDF is encrypted with a password")
    sections = SectionBuilder()
    for number, page in enumerate(reader.pages, start=1):
        sections.heading(1, f"Page {number}")
        sections.add(_clean(page.extract_text()) or scans.read(number, page))
        # pypdf keeps every object it resolved, a page's images included: a 200 MB PDF
        # would end up whole in memory. Its pages hold references, not objects, so
        # dropping the cache after each page keeps memory flat (~40 MB for 200 MB).
        reader.resolved_objects.clear()
    found = sections.finish()
    if not found:
        raise EmptyDocument(scans.why_empty(len(reader.pages)))
    metadata = reader.metadata
    title = one_line(metadata.title or "") if metadata is not None else ""
    return ParsedDocument(title, found, warnings=scans.warnings())


def _clean(page_text: str) -> str:
    """The text layer and OCR'd text alike: canonical prose, words rejoined across lines."""
    return clean_text(_LINE_END_HYPHEN.sub("", normalise(page_text)))


class _ScannedPages:
    """OCRs the pages that have no text layer, and remembers what became of each.

    Tesseract is looked for at the first such page, so a PDF with a text
    layer on every page never depends on it.
    """

    def __init__(self, config: OcrConfig) -> None:
        self._config = config
        self._engine: Tesseract | OcrUnavailable | None = None
        self._pages_by_outcome: dict[str, list[int]] = {}

    def read(self, number: int, page: PageObject) -> str:
        """The page's text read from its images; "" when it has none or OCR cannot read it."""
        images = page.images
        if not len(images):  # nothing to read: a blank page, or vector drawings only
            return ""
        engine = self._find_engine()
        if isinstance(engine, OcrUnavailable):
            self._note(number, f"not indexed: no text layer and {engine}")
            return ""
        try:
            text = _clean(engine.read_page(image.image for image in images if image.image))
        except OcrFailed as failure:
            self._note(number, f"not indexed: {failure}")
            return ""
        self._note(number, _OCRD if text else "not indexed: OCR found no text")
        return text

    def warnings(self) -> tuple[str, ...]:
        """E.g. "pages 2, 5 OCR'd", "pages 3-9 not indexed: OCR timed out after 30 s"."""
        return tuple(
            f"{_page_list(numbers)} {outcome}"
            for outcome, numbers in self._pages_by_outcome.items()
        )

    def why_empty(self, page_count: int) -> str:
        if isinstance(self._engine, OcrUnavailable):  # then no page was OCR'd
            unread = sum(len(numbers) for numbers in self._pages_by_outcome.values())
            return f"{unread} page(s) have no text layer and {self._engine}"
        found = "; ".join(self.warnings()) or "no text layer, and no images to OCR"
        return f"PDF has {page_count} page(s) but no extractable text: {found}"

    def _find_engine(self) -> Tesseract | OcrUnavailable:
        if self._engine is None:
            try:
                self._engine = Tesseract.find(self._config)
            except OcrUnavailable as unavailable:
                self._engine = unavailable
        return self._engine

    def _note(self, number: int, outcome: str) -> None:
        self._pages_by_outcome.setdefault(outcome, []).append(number)


def _page_list(numbers: list[int]) -> str:
    """[2, 5, 6, 7] -> "pages 2, 5-7": a 300-page scan stays one short line."""
    runs = [
        [number for _, number in run]
        for _, run in groupby(enumerate(numbers), lambda pair: pair[1] - pair[0])
    ]
    spans = ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}" for run in runs)
    return f"page {spans}" if len(numbers) == 1 else f"pages {spans}"
