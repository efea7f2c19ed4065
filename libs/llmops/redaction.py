"""Masking of personal data in text kept for analytics (events) or logs.

Pattern-based on purpose: it runs on every event, so it must cost microseconds;
the guardrails will bring model-based PII detection for requests themselves.
"""

from __future__ import annotations

import re

_PATTERNS = (  # most specific first: an IBAN or SSN also looks like a phone number
    ("EMAIL", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")),
    ("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b")),
    ("CARD", re.compile(r"\b(?:\d[ -]?){13,19}\b")),
    ("IP", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("PHONE", re.compile(r"(?<![\w.])\+?\d[\d ()-]{7,}\d\b")),
)


def redact(text: str) -> str:
    """`text` with e-mail addresses, card/phone/account numbers and IPs replaced by <KIND>."""
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"<{kind}>", text)
    return text
