"""Large PDFs for tests and benchmarks, written straight to disk (never whole in memory).

Each page carries a few lines of text (a searchable marker among them) and a
grey-scale image of random bytes, so the file reaches any size while its text
stays small, as in a scanned-and-OCR'd report or an illustrated manual.
"""

from __future__ import annotations

import random
from pathlib import Path

_BLOCK = 1024 * 1024


def page_text(number: int) -> list[str]:
    return [
        f"Page {number} of the inspection report.",
        f"Marker zq{number:05d}x identifies this page.",
        "The pressure vessel passed its hydrostatic test at one and a half times its rating.",
        f"Valve {number % 17} was replaced and the relief setting checked.",
    ]


def write_large_pdf(path: Path, pages: int, image_bytes_per_page: int, seed: int = 7) -> int:
    """Write the PDF; return its size in bytes."""
    rng = random.Random(seed)
    side = max(1, int(image_bytes_per_page**0.5))
    image_len = side * side
    offsets: list[int] = []
    with path.open("wb") as out:

        def obj(number: int, body: bytes) -> None:
            offsets.append(out.tell())
            out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")

        out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
        kids = " ".join(f"{4 + 3 * i} 0 R" for i in range(pages))
        obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
        obj(2, f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
        obj(3, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
        for i in range(pages):
            page, content, image = 4 + 3 * i, 5 + 3 * i, 6 + 3 * i
            obj(
                page,
                (
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    f"/Resources << /Font << /F1 3 0 R >> /XObject << /Im1 {image} 0 R >> >> "
                    f"/Contents {content} 0 R >>"
                ).encode(),
            )
            lines = "".join(f"({line}) Tj T* " for line in page_text(i + 1))
            stream = f"BT /F1 11 Tf 14 TL 72 720 Td {lines}ET q 200 0 0 200 72 300 cm /Im1 Do Q"
            obj(content, f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
            offsets.append(out.tell())
            out.write(
                (
                    f"{image} 0 obj\n<< /Type /XObject /Subtype /Image /Width {side} "
                    f"/Height {side} /ColorSpace /DeviceGray /BitsPerComponent 8 "
                    f"/Length {image_len} >>\nstream\n"
                ).encode()
            )
            left = image_len
            while left:
                n = min(_BLOCK, left)
                out.write(rng.randbytes(n))
                left -= n
            out.write(b"\nendstream\nendobj\n")
        xref = out.tell()
        count = len(offsets) + 1
        out.write(f"xref\n0 {count}\n0000000000 65535 f \n".encode())
        for offset in offsets:
            out.write(f"{offset:010d} 00000 n \n".encode())
        out.write(f"trailer\n<< /Size {count} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
        return out.tell()
