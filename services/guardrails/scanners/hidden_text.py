"""Hidden text: invisible characters and look-alike letters that hide words from rules.

"ign\u200bore previous instructions" (a zero-width space inside) or "password" spelt with a
Cyrillic o read the same to a person and to a model but slip past every pattern and
keyword. So the engine calls `normalize` once, before any scanner, and every scanner sees
the same clean text: NFKC (full-width and mathematical letters become plain ones),
invisible and bidi control characters removed, and Cyrillic or Greek look-alikes inside
Latin words mapped to ASCII.
`Normalized` maps offsets in the clean text back to the original, for redacting the
original if ever needed.

The scanner reports from that same `Normalized` rather than normalising again: the engine
leaves it in `item.memo[NORMALIZED]` (its `.text` is then `item.text`) and spans are offsets
into the normalised text, like every other scanner's. Without it, `scan` normalises
`item.text` itself and maps the spans back into `item.text`. Either way a span covers the
word (or bidi run) that held something hidden, never a zero-length point.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from guardrails.scanners.base import Found, Scan, ScanInput
from llmops.guardrails.policy import HiddenTextRule

NORMALIZED = "normalized"  # the memo key under which the engine keeps the request's Normalized

_INVISIBLE = "INVISIBLE_CHARACTER"
_BIDI = "BIDI_CONTROL"
_TAG = "TAG_CHARACTER"
_HOMOGLYPH = "MIXED_SCRIPT_WORD"

_HIDDEN = re.compile(
    "[\u200b-\u200f\u2060-\u2064\ufeff\u00ad\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]+"
)
_BIDI_OPEN = frozenset("\u202a\u202b\u202d\u202e\u2066\u2067\u2068")
_BIDI_CLOSE = frozenset("\u202c\u2069")

_LATIN = "A-Za-z\u00c0-\u024f"
_CONFUSABLE_SCRIPTS = "\u0370-\u03ff\u0400-\u052f"  # Greek, Cyrillic
_MIXED_WORD = re.compile(
    rf"\w*(?:[{_LATIN}]\w*[{_CONFUSABLE_SCRIPTS}]|[{_CONFUSABLE_SCRIPTS}]\w*[{_LATIN}])\w*"
)
# Cyrillic and Greek letters that look like ASCII ones (Unicode's confusables, the common
# subset); only applied inside words that mix them with Latin letters, so Russian and
# Greek words stay untouched.
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁһԛԝӏАВЕКМНОРСТХУІЈЅԜ" + "αοριυνκχτΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",  # noqa: RUF001
    "aeopcyxijsdhqwlABEKMHOPCTXYIJSW" + "aopiuvkxtABEZHIKMNOPTYX",
)


@dataclass(frozen=True, slots=True)
class Hidden:
    """A run of removed characters (`start`, `end` in the original) that sat at `at` in the text."""

    type: str
    start: int
    end: int
    at: int


@dataclass(frozen=True, slots=True)
class Normalized:
    """The clean text, what was hidden in the original, and the way back to original offsets.

    `origin[i]` is the (start, end) in `original` of what became `text[i]`; None when the
    two texts line up one to one.
    """

    text: str
    original: str
    hidden: tuple[Hidden, ...] = ()
    mixed_words: tuple[tuple[int, int], ...] = ()  # spans in `text`
    origin: tuple[tuple[int, int], ...] | None = None

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of `original` that `text[start:end]` came from."""
        if self.origin is None:
            return start, end
        if start >= end:
            point = self.origin[start][0] if start < len(self.origin) else len(self.original)
            return point, point
        return self.origin[start][0], self.origin[end - 1][1]


def normalize(text: str) -> Normalized:
    """The text every scanner sees; plain ASCII (most text) costs one check."""
    if text.isascii():
        return Normalized(text, text)
    hidden: list[Hidden] = []
    origin: list[tuple[int, int]] | None = None
    clean = text
    if _HIDDEN.search(text) or not unicodedata.is_normalized("NFKC", text):
        clean, origin = _rebuild(text, hidden)
    mixed = tuple(m.span() for m in _MIXED_WORD.finditer(clean))
    if mixed:
        chars = list(clean)
        for start, end in mixed:
            chars[start:end] = clean[start:end].translate(_HOMOGLYPHS)
        clean = "".join(chars)
    return Normalized(clean, text, tuple(hidden), mixed, None if origin is None else tuple(origin))


def _rebuild(text: str, hidden: list[Hidden]) -> tuple[str, list[tuple[int, int]]]:
    """NFKC without the hidden characters, with the origin of every output character.

    NFKC runs per base character and its combining marks, so each output character can be
    traced to the few input characters it came from.
    """
    out: list[str] = []
    origin: list[tuple[int, int]] = []
    position = 0
    for match in _HIDDEN.finditer(text):
        _append_nfkc(text, position, match.start(), out, origin)
        for offset, char in enumerate(match.group(), match.start()):
            kind = _BIDI if char in _BIDI_OPEN or char in _BIDI_CLOSE else _INVISIBLE
            kind = _TAG if char >= "\U000e0000" else kind
            if hidden and hidden[-1].end == offset and hidden[-1].type == kind:
                hidden[-1] = Hidden(kind, hidden[-1].start, offset + 1, len(out))
            elif not (offset == 0 and char == "\ufeff"):  # a leading BOM is only encoding
                hidden.append(Hidden(kind, offset, offset + 1, len(out)))
        position = match.end()
    _append_nfkc(text, position, len(text), out, origin)
    return "".join(out), origin


def _append_nfkc(
    text: str, start: int, end: int, out: list[str], origin: list[tuple[int, int]]
) -> None:
    segment_start = start
    for i in range(start + 1, end + 1):
        if i == end or not unicodedata.combining(text[i]):
            piece = text[segment_start:i]
            piece = piece if piece.isascii() else unicodedata.normalize("NFKC", piece)
            out.append(piece)
            origin.extend([(segment_start, i)] * len(piece))
            segment_start = i


class HiddenTextScanner:
    """Reports what `normalize` found hidden: score 1.0 when anything was."""

    name = "hidden_text"

    def __init__(self, rule: HiddenTextRule) -> None:
        self.rule = rule

    def scan(self, item: ScanInput) -> Scan:
        normalized = item.memo.get(NORMALIZED)
        if isinstance(normalized, Normalized) and normalized.text == item.text:
            return self.report(normalized)
        normalized = normalize(item.text)
        found = self.report(normalized)
        found.spans = [
            Found(f.type, *normalized.to_original(f.start, f.end), f.score) for f in found.spans
        ]
        return found

    @staticmethod
    def report(normalized: Normalized) -> Scan:
        """What was hidden, as spans of `normalized.text`."""
        text = normalized.text
        spans = [Found(_HOMOGLYPH, start, end) for start, end in normalized.mixed_words]
        closes = [h.at for h in normalized.hidden if normalized.original[h.end - 1] in _BIDI_CLOSE]
        opened = False
        for h in normalized.hidden:
            end = h.at
            if h.type == _BIDI:
                if normalized.original[h.start] not in _BIDI_OPEN:
                    if opened:
                        continue  # the end of a run already reported
                else:
                    opened = True
                    line_end = text.find("\n", h.at)
                    ends = [c for c in closes if c > h.at]
                    end = min([*ends, len(text) if line_end < 0 else line_end])
            spans.append(Found(h.type, *_around(text, h.at, end)))
        if not spans:
            return Scan(0.0)
        counts: dict[str, int] = {}
        for span in spans:
            counts[span.type] = counts.get(span.type, 0) + 1
        reason = "hidden text: " + ", ".join(
            f"{n} {kind.lower().replace('_', ' ')}{'s' * (n > 1)}" for kind, n in counts.items()
        )
        spans.sort(key=lambda f: (f.start, f.end))
        return Scan(1.0, spans, reason)


def _around(text: str, start: int, end: int) -> tuple[int, int]:
    """`start..end` widened to the non-space run it touches (a point becomes its word)."""
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    if start == end and end < len(text):
        end += 1
    return start, end
