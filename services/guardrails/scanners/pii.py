"""Personal data in text: validated patterns for identifiers, a small tagger for names and places.

Patterns run first and cost microseconds; the tagger (`guardrails.pii_ner`, ~20 us a token)
runs only when the rule asks for persons, locations or organisations. Overlapping
findings are resolved by specificity, then length: a checksummed identifier beats an
address, an address beats the city the tagger found inside it, and the text a validated
identifier covers (an e-mail, a card, a URL) is never reported as anything else, even
when its own type is not asked for.
"""

from __future__ import annotations

import re

from guardrails.pii_ner import Gazetteer, Tagger
from guardrails.scanners.base import Found, Scan, ScanInput
from guardrails.scanners.pii_patterns import PATTERN_RECOGNIZERS, Hit
from llmops.guardrails.policy import PiiRule

_NER_SCORES = {"PERSON": 0.85, "LOCATION": 0.8, "ORGANIZATION": 0.75}
NER_TYPES = frozenset(_NER_SCORES)
# Checked by a validator: they claim their text whether or not the rule asks for them.
_CLAIMING = ("EMAIL", "CREDIT_CARD", "IBAN", "NATIONAL_ID", "IP_ADDRESS", "URL")
# Lower wins an overlap; a tie goes to the longer span.
_RANK = {
    "EMAIL": 0,
    "CREDIT_CARD": 0,
    "IBAN": 0,
    "NATIONAL_ID": 0,
    "IP_ADDRESS": 0,
    "URL": 1,
    "ADDRESS": 2,
    "ADDRESS_PLACE": 2,
    "DATE": 3,
    "PHONE": 4,
    "AGE": 4,
    "PERSON": 5,
    "LOCATION": 5,
    "ORGANIZATION": 5,
}
_TRIM = " \t\n.,;:!?'\"()[]{}"
_NAME_WORD = re.compile(r"[^\W\d_][\w'\u2019-]*\.?")
_PARTICLES = frozenset(
    [
        "van",
        "von",
        "de",
        "der",
        "den",
        "ten",
        "ter",
        "da",
        "di",
        "du",
        "le",
        "la",
        "del",
        "bin",
        "al",
        "y",
    ]
)
# A name follows these; the cue itself is not part of the span.
_PERSON_CUE = re.compile(
    r"(?i:\b(?:my name is|name is|named|call me|calls me|dear|hi|hello|hey|"
    r"(?:first|last|full|sur)\s?name(?: is)?\s*[?:]?)\s+)"
    r"|\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Mister|Madam)\.?\s+"
)
_LOCATIVE = frozenset(
    ["in", "from", "near", "around", "across", "into", "visit", "visited", "visiting", "towards"]
)
_ORG_ENDING = re.compile(
    r"\b(?:Inc|Corp|Corporation|Incorporated|LLC|Ltd|Limited|Group|GmbH|AG|plc|PLC|Co|"
    r"Company|Technologies|Systems|Solutions|Holdings|Partners|Bank|University|Institute|"
    r"Foundation|Agency|Association)\.?$"
)
# Words the tagger may take for names in support questions.
_NOT_NAMES = frozenset(
    ["ATM", "IBAN", "SSN", "PIN", "CVV", "OTP", "SMS", "ID", "IP", "URL", "API", "Bot", "User"]
)
# Capitalised at a sentence start, never a name alone.
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "where",
        "when",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "it",
        "its",
        "he",
        "she",
        "they",
        "we",
        "you",
        "i",
        "my",
        "our",
        "your",
        "his",
        "her",
        "their",
        "if",
        "so",
        "but",
        "and",
        "or",
        "as",
        "at",
        "by",
        "for",
        "in",
        "on",
        "of",
        "to",
        "with",
        "from",
        "not",
        "no",
        "yes",
        "all",
        "any",
        "each",
        "every",
        "some",
        "one",
    ]
)
_SENTENCE_BREAK = re.compile(r"[^\W\d_]{3}([.!?])\s+(?=[A-Z])")
_FIRST, _LAST, _COUNTRY = 1, 2, 16  # the gazetteer's list bits (guardrails.pii_ner.GAZETTEERS)
_NAME_LIST = re.compile(
    r"\b[^\W\d_][\w'\u2019-]*(?:,\s+[^\W\d_][\w'\u2019-]*)+,?\s+(?:and|or|&)\s+[^\W\d_][\w'\u2019-]*"
)


def load_ner() -> Tagger:
    """The tagger `PiiScanner` takes, loaded once at start-up (a fraction of a second)."""
    return Tagger.load()


class PiiScanner:
    name = "pii"

    def __init__(self, rule: PiiRule, nlp: Tagger | None) -> None:
        self._wanted = frozenset(rule.entities)
        self._recognizers = [
            PATTERN_RECOGNIZERS[t]
            for t in PATTERN_RECOGNIZERS
            if t in self._wanted or t in _CLAIMING
        ]
        self._nlp = nlp if self._wanted & NER_TYPES else None
        if self._wanted & NER_TYPES and nlp is None:
            raise ValueError(f"{sorted(self._wanted & NER_TYPES)} need the NER model (load_ner)")

    def scan(self, item: ScanInput) -> Scan:
        text = item.text
        hits = [hit for recognize in self._recognizers for hit in recognize(text)]
        if self._nlp is not None and any(c.isupper() for c in text):
            hits.extend(self._entities(text, self._nlp))
        spans = [Found(*hit) for hit in self._named(resolve(hits)) if hit[0] in self._wanted]
        if not spans:
            return Scan(score=0.0)
        types = list(dict.fromkeys(s.type for s in spans))
        return Scan(
            score=max(s.score for s in spans), spans=spans, reason="found " + ", ".join(types)
        )

    def _named(self, hits: list[Hit]) -> list[Hit]:
        """An address's city and country lines are places where places are asked for."""
        place = "LOCATION" if "LOCATION" in self._wanted else "ADDRESS"
        return [(place, *hit[1:]) if hit[0] == "ADDRESS_PLACE" else hit for hit in hits]

    def _entities(self, text: str, nlp: Tagger) -> list[Hit]:
        found = [retyped(text, *e, nlp.gazetteer) for e in nlp.entities(text)]
        hits = named_entities(text, found)
        return [hit for hit in hits if hit[0] in self._wanted]


def retyped(text: str, kind: str, start: int, end: int, gaz: Gazetteer) -> tuple[str, int, int]:
    """The tagger's type, overruled where the gazetteers are unambiguous: a country alone is a
    place, a known first name then a known surname is a person, not a firm."""
    words = text[start:end].lower().split()
    if not words or _ORG_ENDING.search(text, start, end):
        return kind, start, end
    bits = gaz.phrases.get(words[0], {})
    whole = bits.get(tuple(words), 0)
    if kind == "PERSON" and whole & _COUNTRY and not whole & (_FIRST | _LAST):
        return "LOCATION", start, end
    if kind == "ORGANIZATION" and len(words) == 2:
        last = gaz.phrases.get(words[1], {}).get((words[1],), 0)
        if bits.get((words[0],), 0) & _FIRST and last & _LAST:
            return "PERSON", start, end
    return kind, start, end


def named_entities(text: str, entities: list[tuple[str, int, int]]) -> list[Hit]:
    """The tagger's persons, places and organisations, corrected by the words around them.

    The tagger can get the type wrong on names it has never seen ("grew up in SUND" as an
    organisation), so cues fix it: a title or "my name is" before it makes a
    person, "in"/"from" a place, "Inc"/"Group" after it an organisation. A name found once
    is found again wherever it recurs, and in the list it stands in ("Kónya, Becker and
    Vasquez").
    """
    cued = _cued_persons(text)
    hits: list[Hit] = list(cued)
    for found_kind, ent_start, ent_end in entities:
        kind = found_kind
        start, end = _trimmed(text, ent_start, ent_end)
        if (stop := _SENTENCE_BREAK.search(text, start, end)) is not None:
            end = stop.start(1)  # "Sweden. Producer ..." is two sentences, not one name
        value = text[start:end]
        if end - start < 2 or value in _NOT_NAMES or value.lower() in _FUNCTION_WORDS:
            continue
        if text.startswith(":", end) and "\n" not in text[start:end]:
            continue  # a field's label ("Mobile: ...")
        if any(s < end and start < e for _, s, e, _ in cued):
            continue
        words_before = text[max(0, start - 20) : start].split()
        before = words_before[-1].lower() if words_before else ""
        if _ORG_ENDING.search(text, start, end):
            kind = "ORGANIZATION"
        elif before in _LOCATIVE and kind != "LOCATION":
            kind = "LOCATION"
        hits.append((kind, start, end, _NER_SCORES[kind]))
    return hits + _propagated(text, hits)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    if text.endswith("'s", start, end) or text.endswith("\u2019s", start, end):
        end -= 2
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def _name_end(text: str, start: int) -> int:
    """Where the capitalised name words (initials and particles allowed inside) from `start` end."""
    end = start
    for m in _NAME_WORD.finditer(text, start):
        if (m.start() != end and not text[end : m.start()].isspace()) or "\n" in text[
            end : m.start()
        ]:
            break
        word = m.group()
        if not word[0].isupper() and word not in _PARTICLES:
            break
        end = m.end()
        if word.endswith(".") and len(word) > 2:  # "Roe." ends the sentence; "J." is an initial
            break
    while end > start and text[end - 1] == ".":
        end -= 1
    return end


def _cued_persons(text: str) -> list[Hit]:
    hits = []
    for m in _PERSON_CUE.finditer(text):
        end = _name_end(text, m.end())
        if end - m.end() > 1 and text[m.end()].isupper():
            hits.append(("PERSON", m.end(), end, 0.9))
    return hits


def _propagated(text: str, hits: list[Hit]) -> list[Hit]:
    """Persons again: their names where they recur, and the other names of a list they are in."""
    names = {
        w
        for kind, s, e, _ in hits
        if kind == "PERSON"
        for w in text[s:e].split()
        if len(w) > 2 and w[0].isupper() and w not in _PARTICLES
    }
    if not names:
        return []
    taken = [(s, e) for _, s, e, _ in hits]
    found = []

    def add(start: int, end: int) -> None:
        if all(end <= s or start >= e for s, e in taken):
            found.append(("PERSON", start, end, 0.75))
            taken.append((start, end))

    for m in _NAME_WORD.finditer(text):
        if m.group() in names:
            add(m.start(), m.end())
    for m in _NAME_LIST.finditer(text):
        items = [(i.start(), i.end()) for i in _NAME_WORD.finditer(text, m.start(), m.end())]
        items = [(s, e) for s, e in items if text[s].isupper()]
        if any(kind == "PERSON" and s <= a and b <= e for kind, s, e, _ in hits for a, b in items):
            for a, b in items:
                add(a, b)
    return found


def resolve(hits: list[Hit]) -> list[Hit]:
    """Non-overlapping hits in text order, the more specific (then the longer) kept."""
    kept: list[Hit] = []
    taken: list[tuple[int, int]] = []
    for hit in sorted(hits, key=lambda h: (_RANK[h[0]], h[1] - h[2], h[1])):
        _, start, end, _ = hit
        if all(end <= s or start >= e for s, e in taken):
            kept.append(hit)
            taken.append((start, end))
    return sorted(kept, key=lambda h: h[1])
