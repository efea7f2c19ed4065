"""Writes the sample files of every format ingestion parses besides text, Markdown, HTML and PDF.

Run from the repository root: `.venv/bin/python tests/data/formats/make_samples.py`.
Each Office file is written by the library teams use to write them (python-docx,
python-pptx, openpyxl), so it is a real Office Open XML package, not a
hand-made imitation; CSV, JSON and EML come from the standard library. The
contents are invented for these tests (see SOURCE.md).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import docx
import openpyxl
import pptx
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from pptx.util import Inches

HERE = Path(__file__).parent
WHEN = datetime(2025, 3, 14, 9, 30)

PARTS = [
    ("Part", "Code", "Stock", "Bin"),
    ("Ignition electrode", "VB-1021", "12", "A3"),
    ("Flue gas sensor", "VB-2210", "4", "A7"),
    ("Condensate trap", "VB-3305", "9", "B1"),
    ("Expansion vessel 12 l", "VB-4410", "2", "C2"),
]

COFFEES = [
    ("Coffee", "Origin", "Process", "Price per kg (EUR)"),
    ("Sidamo Guji", "Ethiopia", "washed", "18.40"),
    ("Huila Supremo", "Colombia", "washed", "15.90"),
    ("Cerrado Mineiro", "Brazil", "natural", "12.75"),
    ("Tarrazu", "Costa Rica", "honey", "17.10"),
    ("Kiambu AA", "Kenya", "washed", "21.30"),
    ("Mandheling", "Indonesia", "wet-hulled", "16.20"),
    ("Antigua", "Guatemala", "washed", "16.80"),
    ("Yirgacheffe Kochere", "Ethiopia", "natural", "19.60"),
    ("Boquete Geisha", "Panama", "washed", "64.00"),
    ("Nyeri Peaberry", "Kenya", "washed", "22.10"),
    ("Chanchamayo", "Peru", "washed", "13.90"),
    ("Monsooned Malabar", "India", "monsooned", "14.60"),
]


def write_docx(path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = "Vireo Boiler Service Manual"
    document.core_properties.created = WHEN
    document.add_paragraph("Vireo Boiler Service Manual", style="Title")
    document.add_heading("Annual maintenance", level=1)
    document.add_paragraph(
        "Check the flue for obstructions and test the carbon monoxide alarm at every visit. "
        "Descale the heat exchanger of the Vireo boiler every 18 months in hard-water areas."
    )
    document.add_heading("Pressure", level=2)
    document.add_paragraph(
        "The system pressure should read between 1.0 and 1.5 bar when the boiler is cold."
    )
    document.add_heading("Spare parts", level=1)
    document.add_paragraph("Keep these parts in the van:")
    table = document.add_table(rows=0, cols=len(PARTS[0]))
    for values in PARTS:
        for cell, value in zip(table.add_row().cells, values, strict=True):
            cell.text = value
    document.save(str(path))


def write_pptx(path: Path) -> None:
    deck = pptx.Presentation()
    deck.core_properties.title = "Logistics quarterly review"
    deck.core_properties.created = WHEN
    title_slide = deck.slides.add_slide(deck.slide_layouts[0])
    title_slide.shapes.title.text = "Logistics quarterly review"
    title_slide.placeholders[1].text = "Second quarter, operations team"
    bullets = deck.slides.add_slide(deck.slide_layouts[1])
    bullets.shapes.title.text = "Warehouse expansion"
    body = bullets.placeholders[1].text_frame
    body.text = "The Rotterdam warehouse opens in March with 40 loading docks."
    body.add_paragraph().text = "Night shifts start once the second crane is certified."
    notes = bullets.notes_slide.notes_text_frame
    assert notes is not None
    notes.text = "Mention that the fire inspection passed on the first attempt."
    numbers = deck.slides.add_slide(deck.slide_layouts[5])
    numbers.shapes.title.text = "On-time deliveries"
    rows = [("Region", "On time", "Late"), ("North", "97%", "3%"), ("South", "91%", "9%")]
    frame = numbers.shapes.add_table(3, 3, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, values in enumerate(rows):
        for c, value in enumerate(values):
            frame.table.cell(r, c).text = value
    deck.save(str(path))


def write_xlsx(path: Path) -> None:
    workbook = openpyxl.Workbook()
    workbook.properties.title = "Workshop inventory"
    workbook.properties.created = WHEN
    workbook.properties.modified = WHEN
    tools = workbook.active
    assert tools is not None
    tools.title = "Tools"
    for row in [
        ("SKU", "Item", "Quantity", "Unit price", "Last counted"),
        ("KX-7734", "Titanium torque wrench", 14, 89.5, datetime(2025, 2, 3)),
        ("KX-1180", "Digital caliper 150 mm", 31, 24.0, datetime(2025, 2, 3)),
        ("KX-5002", "Thread gauge set", 7, 12.25, datetime(2025, 1, 20)),
    ]:
        tools.append(row)
    suppliers = workbook.create_sheet("Suppliers")
    for row in [
        ("Supplier", "Country", "Lead time (days)"),
        ("Hartmann Werkzeuge", "Germany", 5),
        ("Nordic Fasteners", "Sweden", 9),
    ]:
        suppliers.append(row)
    workbook.save(str(path))


def coffee_csv() -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator="\n").writerows(COFFEES)
    return out.getvalue().encode()


def write_json(path: Path) -> None:
    release = {
        "title": "Ledgerline 4.2 release notes",
        "version": "4.2.0",
        "released": "2025-03-10",
        "changes": {
            "fixed": [
                "Exports to Parquet no longer drop the timezone offset of timestamps.",
                "The reconciliation report rounds half-cents like the bank does.",
            ],
            "added": ["Bulk approval of up to 500 invoices at once."],
        },
        "maintainers": [
            {"name": "Ines Duarte", "role": "release manager", "team": "payments"},
            {"name": "Tomasz Wrona", "role": "reviewer", "team": "platform"},
        ],
    }
    path.write_text(json.dumps(release, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_eml(path: Path) -> None:
    message = EmailMessage()
    message["From"] = "Dana Whitfield <dana@roastery.example>"
    message["To"] = "support@grinders.example"
    message["Subject"] = "Repair of espresso grinder EG-64"
    message["Date"] = "Fri, 14 Mar 2025 09:30:00 +0000"
    message["Message-ID"] = "<repair-eg64@roastery.example>"
    message.set_content(
        "Hello,\n\nThe courier will collect the damaged espresso grinder on Thursday between "
        "9 and 11 am. The burrs make a grinding noise above 1200 rpm.\n\nThanks,\nDana\n"
    )
    quote = b"Item,Cost (EUR)\nBurr set replacement,64.00\nMotor inspection,35.00\n"
    message.add_attachment(quote, maintype="text", subtype="csv", filename="repair-quote.csv")
    message.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="x.png")
    path.write_bytes(bytes(message))


def main() -> None:
    write_docx(HERE / "boiler-manual.docx")
    write_pptx(HERE / "quarterly-review.pptx")
    write_xlsx(HERE / "inventory.xlsx")
    (HERE / "coffee-prices.csv").write_bytes(coffee_csv())
    write_json(HERE / "release-notes.json")
    write_eml(HERE / "grinder-repair.eml")
    write_scanned_pdfs()


# --- scanned PDFs (OCR) --------------------------------------------------------

DELIVERY_NOTE = [
    "Delivery note 4471",
    "Twelve oak pallets arrived at the",
    "Antwerp depot on Tuesday morning.",
    "The forklift battery needs replacing.",
]
INSPECTION = [
    "Scaffolding inspection",
    "Inspector Marta Kowalczyk approved",
    "the scaffolding on level three.",
]


def scanned_page(lines: list[str]) -> Image.Image:
    """An A4 page at 150 dpi as a scanner returns it: a grey image, no text layer."""
    page = Image.new("L", (1240, 1754), 250)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=34)  # Pillow's own font: the same on every machine
    for row, line in enumerate(lines):
        draw.text((120, 150 + 44 * row), line, fill=20, font=font)
    return page


def write_scanned_pdfs() -> None:
    """An image-only PDF (Pillow, as scanners write them) and one with a text and a scanned page."""
    scanned_page(DELIVERY_NOTE).save(
        HERE / "scanned-delivery-note.pdf",
        resolution=150.0,
        title="Delivery note 4471",
        creationDate=WHEN.timetuple(),
        modDate=WHEN.timetuple(),
    )
    mixed = FPDF()
    mixed.set_title("Site report")
    mixed.set_creation_date(WHEN)
    mixed.set_font("Helvetica", size=12)
    mixed.add_page()
    mixed.multi_cell(0, 8, "Site report: the crane on the north side was serviced on Monday.")
    mixed.add_page()
    mixed.image(scanned_page(INSPECTION), x=0, y=0, w=mixed.w, h=mixed.h)
    mixed.output(str(HERE / "mixed-text-and-scan.pdf"))


if __name__ == "__main__":
    main()
