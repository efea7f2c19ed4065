"""Scanned PDF pages: read by the real tesseract, or named when OCR is off or not installed.

The samples are tests/data/formats/{scanned-delivery-note,mixed-text-and-scan}.pdf,
written by make_samples.py: text rendered into an image with Pillow, with no text layer.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader, PdfWriter

from ingestion.errors import EmptyDocument
from ingestion.formats import Format
from ingestion.ocr import OcrConfig
from ingestion.parsing import ParsedDocument, parse, parse_file
from ingestion.pdf import parse_pdf

SAMPLES = Path(__file__).parents[1] / "data" / "formats"
SCANNED = SAMPLES / "scanned-delivery-note.pdf"
MIXED = SAMPLES / "mixed-text-and-scan.pdf"
TEXT_PAGE = "Site report: the crane on the north side was serviced on Monday."
NOT_INSTALLED = "no text layer and OCR is not installed (install tesseract-ocr)"
OFF = "no text layer and OCR is off (LLMOPS_OCR=off)"


def require_tesseract() -> None:
    """These tests need the real engine: fail, never skip, where it is missing."""
    if shutil.which("tesseract") is None:
        pytest.fail("tesseract is not on PATH: install it (apt-get install tesseract-ocr)")


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def parsed(path: Path, ocr: OcrConfig | None = None) -> ParsedDocument:
    with path.open("rb") as stream:
        return parse_pdf(stream, ocr)


@pytest.fixture
def no_tesseract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which no tesseract can be found, as on a machine without the package."""
    monkeypatch.setenv("PATH", str(tmp_path))


# --- OCR on -----------------------------------------------------------------------


def test_a_scanned_page_is_read_by_ocr() -> None:
    require_tesseract()
    document = parsed(SCANNED, OcrConfig())
    assert document.title == "Delivery note 4471"
    [page] = document.sections
    assert page.heading == "Page 1"
    assert {"delivery", "4471", "pallets", "antwerp", "tuesday", "forklift"} <= words(page.text)
    assert document.warnings == ("page 1 OCR'd",)


def test_a_mixed_pdf_has_its_text_page_and_its_scanned_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The worker's path: parse_file with no settings object, OCR on by the environment.
    require_tesseract()
    monkeypatch.setenv("LLMOPS_OCR", "auto")
    document = parse_file(MIXED, Format.PDF)
    assert [s.heading for s in document.sections] == ["Page 1", "Page 2"]
    assert document.sections[0].text == TEXT_PAGE
    assert {"inspector", "marta", "kowalczyk", "scaffolding", "three"} <= words(
        document.sections[1].text
    )
    assert document.warnings == ("page 2 OCR'd",)


def test_ocr_text_is_cleaned_like_a_text_layer() -> None:
    require_tesseract()
    page = Image.new("L", (1240, 600), 255)
    font = ImageFont.load_default(size=34)
    draw = ImageDraw.Draw(page)
    draw.text((120, 100), "Each scanned docu-", fill=0, font=font)
    draw.text((120, 144), "ment   is   indexed.", fill=0, font=font)
    scan = io.BytesIO()
    page.save(scan, format="PDF", resolution=150.0)
    [section] = parse_pdf(io.BytesIO(scan.getvalue()), OcrConfig()).sections
    assert section.text == "Each scanned document is indexed."


def test_a_page_past_its_ocr_timeout_is_named_and_the_rest_indexed() -> None:
    require_tesseract()
    document = parsed(MIXED, OcrConfig(page_timeout_s=0.001))
    assert [s.text for s in document.sections] == [TEXT_PAGE]
    assert document.warnings == (
        "page 2 not indexed: OCR timed out after 0.001 s (LLMOPS_OCR_PAGE_TIMEOUT_S)",
    )


def test_a_language_without_its_pack_is_named_in_the_warning() -> None:
    require_tesseract()
    [warning] = parsed(MIXED, OcrConfig(languages="xyz")).warnings
    assert warning.startswith("page 2 not indexed: tesseract failed: ")
    assert "Failed loading language 'xyz'" in warning


# --- OCR off or not installed -----------------------------------------------------


def test_with_ocr_off_the_text_page_is_indexed_and_the_scanned_page_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMOPS_OCR", "off")
    document = parse(MIXED.read_bytes(), Format.PDF)
    assert [(s.heading, s.text) for s in document.sections] == [("Page 1", TEXT_PAGE)]
    assert document.warnings == (f"page 2 not indexed: {OFF}",)


@pytest.mark.usefixtures("no_tesseract")
def test_without_tesseract_the_scanned_pages_are_named_by_number() -> None:
    mixed = PdfReader(MIXED)
    text, scan = mixed.pages
    writer = PdfWriter()
    for page in [text, scan, scan, text, scan]:
        writer.add_page(page)
    out = io.BytesIO()
    writer.write(out)
    document = parse(out.getvalue(), Format.PDF)
    assert [s.heading for s in document.sections] == ["Page 1", "Page 4"]
    assert document.warnings == (f"pages 2-3, 5 not indexed: {NOT_INSTALLED}",)


@pytest.mark.usefixtures("no_tesseract")
def test_a_scan_without_tesseract_is_an_empty_document_saying_to_install_it() -> None:
    with pytest.raises(EmptyDocument) as caught:
        parse_file(SCANNED, Format.PDF)
    assert caught.value.reason == f"empty_document: 1 page(s) have {NOT_INSTALLED}"


def test_a_scan_with_ocr_off_is_an_empty_document_saying_so() -> None:
    with pytest.raises(EmptyDocument) as caught:
        parsed(SCANNED, OcrConfig(mode="off"))
    assert caught.value.reason == f"empty_document: 1 page(s) have {OFF}"


def test_the_ocr_configuration_comes_from_the_llmops_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLMOPS_OCR", "off")
    monkeypatch.setenv("LLMOPS_OCR_LANGUAGES", "eng+deu")
    monkeypatch.setenv("LLMOPS_OCR_PAGE_TIMEOUT_S", "12.5")
    assert OcrConfig.from_environment() == OcrConfig("off", "eng+deu", 12.5)
