"""Sentence boundaries, shared by groundedness (which scores sentences) and the streaming
holdback (which releases an answer one complete sentence at a time).

A boundary is a terminator (. ! ? …, with any closing quotes or brackets) followed by
whitespace, or a newline. Plain rules, no model: this runs on every streamed chunk. A "."
is not a boundary after a known abbreviation ("e.g.", "Dr."), dotted initials ("U.S."), a
single capital initial ("J. Smith") or a list number at the start of a line ("1. "), nor
when the next word starts in lower case. "3.5" never qualifies (no whitespace follows).
While text is still arriving, a terminator followed only by whitespace is undecided (the
next word's case decides it), so `last_sentence_end` waits for that word and a streamed
answer is cut where the finished one will be; a newline never waits.
"""

from __future__ import annotations

import re

# Always followed by more of the same sentence.
_ABBREVIATIONS = frozenset(
    [
        "cf",
        "vs",
        "al",
        "dr",
        "mr",
        "mrs",
        "ms",
        "prof",
        "st",
        "sr",
        "jr",
        "mt",
        "no",
        "nos",
        "fig",
        "figs",
        "approx",
        "ca",
        "inc",
        "ltd",
        "co",
        "corp",
        "dept",
        "est",
        "gen",
        "gov",
        "sen",
        "rep",
        "rev",
        "univ",
        "vol",
        "eq",
        "ref",
    ]
)
# "etc" often ends a sentence: keep it a boundary when a capitalised word follows.
_SOFT_ABBREVIATIONS = frozenset(("etc", "a.m", "p.m"))
_CLOSERS = "\"')]»\u201d\u2019"
_TERMINATOR = re.compile(rf"[.!?…]+[{re.escape(_CLOSERS)}]*(?=\s)|\n")
_OPENERS = "(\"'[\u201c\u2018"
_DOTTED = re.compile(r"(?:[A-Za-z]\.){1,3}[A-Za-z]?")  # U.S. / e.g. / U.S.A.
_NEXT = re.compile(r"\s*(\S)?")


def _token_before(text: str, end: int) -> str:
    """The word that ends at `end` (before a terminating '.')."""
    start = end
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in _OPENERS:
        start -= 1
    return text[start:end]


def _is_boundary(text: str, match: re.Match[str], final: bool) -> bool | None:
    """True, False, or None when it depends on text that has not arrived yet."""
    mark = match.group()
    if mark == "\n":
        return True
    following = _NEXT.match(text, match.end())
    assert following is not None
    if "\n" in following.group():
        return True
    next_char = following.group(1)
    if next_char is None and not final:
        return None
    if mark[0] != "." or len(mark.rstrip(_CLOSERS)) > 1:  # ! ? … or an ellipsis "..."
        return next_char is None or not next_char.islower()
    word = _token_before(text, match.start())
    key = word.lower().rstrip(".")
    if key in _ABBREVIATIONS or (len(word) == 1 and word.isupper()):
        return False
    if _DOTTED.fullmatch(word + ".") and key not in _SOFT_ABBREVIATIONS:
        return False  # U.S., i.e.
    if word.isdigit() and not text[text.rfind("\n", 0, match.start()) + 1 : match.start()].strip(
        "0123456789 \t"
    ):
        return False  # "1. First step"
    if next_char is None:
        return True
    return not next_char.islower() and (key not in _SOFT_ABBREVIATIONS or next_char.isupper())


def _ends(text: str, final: bool) -> list[int]:
    """Offsets just after each decided sentence end (stopping at the first undecided one)."""
    ends = []
    for match in _TERMINATOR.finditer(text):
        decided = _is_boundary(text, match, final)
        if decided is None:
            break
        if decided:
            ends.append(match.end())
    return ends


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of a finished text, surrounding whitespace excluded."""
    spans = []
    start = 0
    for end in [*_ends(text, final=True), len(text)]:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, left + len(stripped)))
        start = end
    return spans


def last_sentence_end(text: str) -> int:
    """The offset just after the last sentence that is complete in text still arriving (0: none).

    A streamed answer can release `text[:last_sentence_end(text)]`: what follows may still
    change where the current sentence ends.
    """
    ends = _ends(text, final=False)
    return ends[-1] if ends else 0
