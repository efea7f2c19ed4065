"""Pseudonyms for redacted values: `<PERSON_1>` is the same person throughout one request.

The guardrails service replaces what a policy redacts with these placeholders
and, when the policy restores, hands the caller's gateway the mapping back for
the one request; the answer then gets the original values again. The mapping
lives in the two processes' memory for that request only: never stored,
logged or put in an event. The gateway uses `Restorer` itself only when the
guardrails service could not be reached and the policy fails open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z_]*?)_(\d{1,4})>")
_LONGEST = 32  # the longest placeholder a partial one at the end of a piece can grow into


class Pseudonyms:
    """Hands out one placeholder per (type, value) within one request."""

    def __init__(self, known: Mapping[str, str] | None = None) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self.mapping: dict[str, str] = {}  # placeholder -> original value
        for placeholder, value in (known or {}).items():
            match = PLACEHOLDER_RE.fullmatch(placeholder)
            if match is None:
                continue
            kind, number = match.group(1), int(match.group(2))
            self._by_value[(kind, value)] = placeholder
            self._counts[kind] = max(self._counts.get(kind, 0), number)
            self.mapping[placeholder] = value

    def placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        found = self._by_value.get(key)
        if found is None:
            number = self._counts.get(kind, 0) + 1
            self._counts[kind] = number
            found = self._by_value[key] = f"<{kind}_{number}>"
            self.mapping[found] = value
        return found


def replace_spans(text: str, spans: Iterable[tuple[int, int, str]]) -> str:
    """`text` with each (start, end, replacement) applied; spans must not overlap."""
    out: list[str] = []
    last = 0
    for start, end, replacement in sorted(spans):
        if start < last:
            continue  # overlapping: the earlier span already covers it
        out.append(text[last:start])
        out.append(replacement)
        last = end
    out.append(text[last:])
    return "".join(out)


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """`text` with every known placeholder replaced by its original value."""
    if not mapping or "<" not in text:
        return text
    return PLACEHOLDER_RE.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


def placeholder_spans(text: str) -> list[tuple[int, int]]:
    """Where placeholders are in `text` (scanners must not report them as findings)."""
    return [m.span() for m in PLACEHOLDER_RE.finditer(text)] if "<" in text else []


def partial_tail(text: str) -> int:
    """Where a placeholder that may still be completing starts (len(text) if none)."""
    start = text.rfind("<", max(0, len(text) - _LONGEST))
    if start == -1 or ">" in text[start:]:
        return len(text)
    if re.fullmatch(r"<[A-Z_0-9]*", text[start:]) is None:
        return len(text)
    return start


class Restorer:
    """Restores placeholders in an answer that arrives in pieces (one may be split in two)."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        self._mapping = mapping
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = partial_tail(text)
        self._held = text[cut:]
        return restore(text[:cut], self._mapping)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return restore(text, self._mapping)
