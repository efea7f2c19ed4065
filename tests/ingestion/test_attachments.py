"""An e-mail's attachments become documents of their own, derived from the parent."""

from __future__ import annotations

from pathlib import Path

from ingestion.attachments import attachment_documents, safe_filename
from ingestion.formats import Format
from ingestion.parsing import parse
from ingestion.sections import Attachment, ParsedDocument, Section
from llmops.v1 import documents_pb2

EML = Path(__file__).parents[1] / "data" / "formats" / "grinder-repair.eml"


def parent() -> documents_pb2.Document:
    return documents_pb2.Document(
        tenant="acme",
        doc_id="mail/2025/eg64",
        collection="support",
        source="inbox/eg64.eml",
        content=EML.read_bytes(),
        metadata={"team": "repairs"},
    )


def test_parseable_attachments_become_documents_with_derived_ids() -> None:
    doc = parent()
    [quote] = attachment_documents(doc, parse(doc.content, Format.EML))  # the PNG is left out
    assert quote.doc_id == "mail/2025/eg64/attachments/1-repair-quote.csv"
    assert (quote.tenant, quote.collection) == ("acme", "support")
    assert quote.source == "inbox/eg64.eml#attachments/1-repair-quote.csv"
    assert quote.title == "repair-quote.csv"
    assert quote.content_type == "text/csv"
    assert dict(quote.metadata) == {
        "team": "repairs",
        "parent_doc_id": "mail/2025/eg64",
        "attachment": "repair-quote.csv",
    }
    assert parse(quote.content, Format.CSV).sections[0].text.startswith("Item | Cost (EUR)")


def test_ids_are_stable_and_distinct_for_attachments_with_one_name() -> None:
    parsed = ParsedDocument(
        "",
        [Section("", "x")],
        [Attachment("../../etc/notes.txt", "text/plain", b"a"), Attachment("notes.txt", "", b"b")],
    )
    ids = [d.doc_id for d in attachment_documents(parent(), parsed)]
    assert ids == [
        "mail/2025/eg64/attachments/1-notes.txt",
        "mail/2025/eg64/attachments/2-notes.txt",
    ]
    assert ids == [d.doc_id for d in attachment_documents(parent(), parsed)]


def test_filenames_are_made_safe() -> None:
    assert safe_filename("C:\\Users\\me\\Q1 report.docx") == "Q1 report.docx"
    assert safe_filename("rapport d\u2019\u00e9t\u00e9.pdf") == "rapport d_\u00e9t\u00e9.pdf"
    assert safe_filename("..") == "attachment"
    assert safe_filename("a" * 300 + ".csv") == "a" * 96 + ".csv"
