"""Text of scanned PDF pages, read from their images by the `tesseract` binary.

The binary is called directly (image on stdin, text on stdout), as OCRmyPDF
and pytesseract do, rather than through a Python binding: Debian's
`tesseract-ocr` package is all a machine needs, and a page that hangs the
engine is killed at its timeout instead of hanging the worker.

The parser runs in a worker process that has no settings object, so the
configuration is read from the same `LLMOPS_OCR*` variables as the service's
settings each time a document is parsed (`OcrConfig.from_environment`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image

from ingestion.settings import IngestionSettings, OcrMode

# Image modes a PNM file (the cheapest format tesseract reads) can carry as is.
_PNM_MODES = frozenset({"1", "L", "RGB"})


@dataclass(frozen=True, slots=True)
class OcrConfig:
    """Whether pages without a text layer are OCR'd, in which languages, and for how long."""

    mode: OcrMode = "auto"
    languages: str = "eng"  # tesseract's -l: "eng", "eng+deu" (each needs its language pack)
    page_timeout_s: float = 30.0

    @classmethod
    def from_environment(cls) -> OcrConfig:
        """From LLMOPS_OCR, LLMOPS_OCR_LANGUAGES and LLMOPS_OCR_PAGE_TIMEOUT_S, as now set."""
        settings = IngestionSettings()
        return cls(settings.ocr, settings.ocr_languages, settings.ocr_page_timeout_s)


class OcrUnavailable(Exception):
    """OCR cannot run on this machine or is switched off; the message says which."""


class OcrFailed(Exception):
    """Tesseract failed or ran out of time on one page; the message says how, on one line."""


@dataclass(frozen=True, slots=True)
class Tesseract:
    """The tesseract binary, ready to read pages in the configured languages."""

    binary: str
    languages: str
    page_timeout_s: float

    @classmethod
    def find(cls, config: OcrConfig) -> Tesseract:
        """The engine `config` asks for; OcrUnavailable if it is off or not on PATH."""
        if config.mode == "off":
            raise OcrUnavailable("OCR is off (LLMOPS_OCR=off)")
        binary = shutil.which("tesseract")
        if binary is None:
            raise OcrUnavailable("OCR is not installed (install tesseract-ocr)")
        return cls(binary, config.languages, config.page_timeout_s)

    def read_page(self, images: Iterable[Image.Image]) -> str:
        """The text of a page's images, in order; all of them share the page's timeout.

        `images` may be a generator, so only one decoded image is held at a time.
        """
        deadline = time.monotonic() + self.page_timeout_s
        texts = [self._read(image, deadline) for image in images]
        return "\n\n".join(text for text in texts if text.strip())

    def _read(self, image: Image.Image, deadline: float) -> str:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        try:
            done = subprocess.run(
                [self.binary, "stdin", "stdout", "-l", self.languages],
                input=_pnm(image),
                capture_output=True,
                timeout=remaining,
                # OpenMP threads only fight each other when several workers OCR at
                # once (OCRmyPDF sets the same limit); one thread was ~2x faster here.
                env={**os.environ, "OMP_THREAD_LIMIT": "1"},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise self._timed_out() from None
        except OSError as exc:
            raise OcrFailed(f"tesseract could not be run: {exc}") from None
        if done.returncode != 0:
            # All of stderr: the cause ("Failed loading language 'xyz'") precedes the last line.
            errors = " ".join(done.stderr.decode("utf-8", "replace").split())
            raise OcrFailed(f"tesseract failed: {errors[:300] or f'exit status {done.returncode}'}")
        return done.stdout.decode("utf-8", "replace")

    def _timed_out(self) -> OcrFailed:
        return OcrFailed(
            f"OCR timed out after {self.page_timeout_s:g} s (LLMOPS_OCR_PAGE_TIMEOUT_S)"
        )


def _pnm(image: Image.Image) -> bytes:
    """The image as PBM/PGM/PPM: no compression to spend time on, and leptonica reads it."""
    if image.mode not in _PNM_MODES:
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PPM")
    return out.getvalue()
