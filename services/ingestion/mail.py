"""E-mail (EML, RFC 5322 with MIME) -> ParsedDocument, with the standard library's `email`.

The subject is the title; From/To/Cc/Date/Subject open the text, so a search
for a sender or a date finds the message. The body is the text/plain part,
else the text/html one read like any HTML page. Attachments are not text of
this document: they are returned as `Attachment`s, which
ingestion.attachments turns into documents of their own.
"""

from __future__ import annotations

import email
import email.policy
import mimetypes
from collections.abc import Callable
from email.message import EmailMessage

from ingestion.errors import UnparseableDocument
from ingestion.sections import (
    Attachment,
    ParsedDocument,
    Section,
    clean_text,
    one_line,
    refuse_unreadable,
)

_SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_IDENTIFYING_HEADERS = ("From", "To", "Subject", "Date", "Message-ID")


def parse_eml(content: bytes, parse_html: Callable[[bytes], ParsedDocument]) -> ParsedDocument:
    """`parse_html` reads an HTML body (passed in: the HTML reader lives in ingestion.parsing)."""
    return refuse_unreadable("EML", lambda: _read_eml(content, parse_html))


def _read_eml(content: bytes, parse_html: Callable[[bytes], ParsedDocument]) -> ParsedDocument:
    message = email.message_from_bytes(content, _class=EmailMessage, policy=email.policy.default)
    if not any(message.get(name) for name in _IDENTIFYING_HEADERS):
        raise UnparseableDocument(
            "not an e-mail: it has none of the headers " + ", ".join(_IDENTIFYING_HEADERS)
        )
    header = "\n".join(
        f"{name}: {one_line(str(message[name]))}" for name in _SHOWN_HEADERS if message.get(name)
    )
    sections = [Section("", header)]
    body = message.get_body(preferencelist=("plain", "html"))
    if isinstance(body, EmailMessage):
        text = body.get_content()
        if body.get_content_subtype() == "html":
            sections += parse_html(text.encode()).sections
        elif cleaned := clean_text(text):
            sections = [Section("", f"{header}\n\n{cleaned}")]
    attachments = [
        _attachment(number, part)
        for number, part in enumerate(message.iter_attachments(), start=1)
        if isinstance(part, EmailMessage)
    ]
    return ParsedDocument(one_line(str(message.get("Subject", ""))), sections, attachments)


def _attachment(number: int, part: EmailMessage) -> Attachment:
    """The part's decoded bytes; a forwarded message (message/rfc822) as its own EML bytes."""
    content_type = part.get_content_type()
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        inner_message = inner[0] if isinstance(inner, list) else inner
        data = inner_message.as_bytes() if isinstance(inner_message, EmailMessage) else b""
    else:
        decoded = part.get_payload(decode=True)
        data = decoded if isinstance(decoded, bytes) else b""
    extension = (
        ".eml" if content_type == "message/rfc822" else mimetypes.guess_extension(content_type)
    )
    filename = part.get_filename() or f"attachment-{number}{extension or ''}"
    return Attachment(filename, content_type, data)
