"""Token-aware chunking with the embedding model's own tokenizer.

Why it is built this way:
- Sizes are counted in the embedding model's tokens, without special tokens,
  so a chunk of `max_tokens` plus [CLS]/[SEP] always fits the model and the
  embedding never silently truncates text.
- Each section is tokenized once (one `encode_batch` per document); every size
  decision afterwards is arithmetic on the token offsets. Embedding is the
  pipeline's bottleneck, so chunking must cost little beside it.
- A chunk never spans two sections, so its heading is exact.
- Chunks break at sentence ends; consecutive chunks of a section share about
  `overlap_tokens` of whole sentences, so a fact split across a boundary is
  still retrievable from one chunk.
- A sentence too long for one chunk is cut preferably at a line break in the
  second half of the window (code, lists), else between words, and only for
  a single word longer than a chunk (rare: WordPiece turns words over 100
  characters into one [UNK]) between sub-word tokens.

- A table (a section marked `table`, one row per line, the first its header)
  is packed by rows instead: a row is never split across chunks, and every
  chunk starts with the header row, so a chunk of a long table still names
  its columns. No overlap: rows are records, not a text whose facts straddle
  a boundary. Only a row too long for a chunk on its own is cut like a long
  sentence, and a header over half a chunk is not repeated (it would crowd
  out the rows).

Cuts fall on pre-tokenizer word boundaries, where tokenizing a slice gives the
same tokens as the whole, so `token_count` equals what the model will see.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from tokenizers import Tokenizer

from ingestion.parsing import ParsedDocument

# Sentence ends: sentence-final punctuation (and any closing quote or
# bracket) then whitespace; CJK full-width punctuation, with or without
# whitespace; or a blank line. The one group that takes part is the gap
# between two sentences. The leading lookahead lets the regex engine skip
# plain text fast (3x on English prose).
_SENTENCE_END = re.compile(
    r"(?=[.!?\u2026\u3002\uff01\uff1f\n])"
    r"(?:[.!?\u2026]+[\"'\u201d\u2019)\]]*(\s++)"
    r"|[\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*(\s*+)"
    r"|(\n\s*\n\s*+))"
)


def _sentence_gaps(text: str) -> list[tuple[int, int]]:
    """(start, end) of the whitespace between consecutive sentences of `text`."""
    gaps = []
    for match in _SENTENCE_END.finditer(text):
        start, end = match.span(match.lastindex or 0)
        # "e.g. this", "etc. été": a lowercase word after a period goes on
        # the same sentence, unless a blank line separates them.
        if match.lastindex == 1 and text[end : end + 1].islower() and "\n\n" not in text[start:end]:
            continue
        gaps.append((start, end))
    return gaps


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk: `text` is verbatim from the section (no heading prepended).

    The one addition: a table's chunks after the first start with its header row.
    """

    index: int
    text: str
    heading: str
    token_count: int


class _Unit(NamedTuple):
    """An unbreakable run of a section: a sentence, or a piece of a long one.

    `fragment` marks a piece cut inside a word. It is counted by tokenizing
    its own text, because a fragment's tokens differ from the ones it had
    inside the word.
    """

    start: int
    end: int
    tokens: int
    fragment: bool = False


@dataclass(frozen=True, slots=True)
class _Tokenized:
    """A section's text with its tokens' character offsets and word ids."""

    text: str
    offsets: list[tuple[int, int]]
    words: list[int | None]

    def end_before(self, k: int) -> int:
        """Where the text before token k ends: after token k-1 and anything but whitespace."""
        end = self.offsets[k - 1][1]
        return end + len(self.text[end : self.offsets[k][0]].rstrip())

    def line_break_cut(self, low: int, limit: int) -> int | None:
        """The last token k in (low, limit] that starts a line, if any."""
        text, offsets = self.text, self.offsets
        return next(
            (k for k in range(limit, low, -1) if "\n" in text[offsets[k - 1][1] : offsets[k][0]]),
            None,
        )

    def word_cut(self, low: int, limit: int) -> int | None:
        """The last token k in (low, limit] that starts a word, if any."""
        words = self.words
        return next((k for k in range(limit, low, -1) if words[k] != words[k - 1]), None)


class Chunker:
    """Splits a ParsedDocument into chunks of at most `max_tokens` tokens."""

    def __init__(
        self, tokenizer: Tokenizer, max_tokens: int = 200, overlap_tokens: int = 32
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError(
                f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens} of {max_tokens}"
            )
        # A private copy: truncation would silently drop text and padding would
        # inflate counts, and the caller's tokenizer may need both.
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._max = max_tokens
        self._overlap = overlap_tokens

    def chunk(self, doc: ParsedDocument) -> list[TextChunk]:
        """Chunks of every section in order, indexed from 0 across the document."""
        texts = [section.text for section in doc.sections]
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        chunks: list[TextChunk] = []
        for section, encoding in zip(doc.sections, encodings, strict=True):
            tokenized = _Tokenized(section.text, encoding.offsets, encoding.word_ids)
            pieces = self._table(tokenized) if section.table else self._prose(tokenized)
            for text, tokens in pieces:
                chunks.append(TextChunk(len(chunks), text, section.heading, tokens))
        return chunks

    def _prose(self, section: _Tokenized) -> list[tuple[str, int]]:
        """(text, token count) of each chunk of a section of prose."""
        units = self._units(section)
        return [
            (section.text[units[first].start : units[last].end], tokens)
            for first, last, tokens in self._pack(units)
        ]

    def _table(self, section: _Tokenized) -> list[tuple[str, int]]:
        """(text, token count) of each chunk of a table: whole rows, the header on top."""
        rows = self._rows(section)
        header = rows[0] if len(rows) > 1 and rows[0].tokens <= self._max // 2 else None
        top = "" if header is None else section.text[header.start : header.end] + "\n"
        top_tokens = 0 if header is None else header.tokens
        pieces: list[tuple[str, int]] = []
        group: list[_Unit] = []
        used = top_tokens

        def close_group() -> None:
            nonlocal used
            if group:
                pieces.append((top + section.text[group[0].start : group[-1].end], used))
                group.clear()
                used = top_tokens

        for row in rows[1:] if header is not None else rows:
            if top_tokens + row.tokens > self._max:  # too long beside the header: on its own
                close_group()
                first = bisect_left(section.offsets, (row.start,))
                stop = bisect_left(section.offsets, (row.end,))
                cut = self._cut(section, first, stop, row.end) if row.tokens > self._max else [row]
                pieces += [(section.text[unit.start : unit.end], unit.tokens) for unit in cut]
                continue
            if used + row.tokens > self._max:
                close_group()
            group.append(row)
            used += row.tokens
        close_group()
        return pieces

    @staticmethod
    def _rows(section: _Tokenized) -> list[_Unit]:
        """Each line of a table section with its token count."""
        offsets, rows, begin = section.offsets, [], 0
        for line in section.text.split("\n"):
            end = begin + len(line)
            rows.append(
                _Unit(begin, end, bisect_left(offsets, (end,)) - bisect_left(offsets, (begin,)))
            )
            begin = end + 1
        return rows

    def _units(self, section: _Tokenized) -> list[_Unit]:
        """Sentences of the section with their token counts; long ones cut to fit."""
        offsets = section.offsets
        units: list[_Unit] = []
        begin = 0
        for end, next_begin in (*_sentence_gaps(section.text), (len(section.text), 0)):
            if end > begin:
                # (pos,) sorts before every (pos, end) offset: the first token at or after pos.
                first, stop = bisect_left(offsets, (begin,)), bisect_left(offsets, (end,))
                if stop - first <= self._max:
                    units.append(_Unit(begin, end, stop - first))
                else:
                    units.extend(self._cut(section, first, stop, end))
            begin = next_begin
        return units

    def _cut(self, section: _Tokenized, first: int, stop: int, end: int) -> list[_Unit]:
        """Cut the sentence of tokens [first, stop), ending at char `end`, into fitting pieces.

        `first` is always the first token of a word, so every piece but those
        of an over-long word is counted exactly by the section's tokens.
        """
        pieces: list[_Unit] = []
        while stop - first > self._max:
            start, limit = section.offsets[first][0], first + self._max
            cut = section.line_break_cut(first + self._max // 2, limit)
            if cut is None:
                cut = section.word_cut(first, limit)
            if cut is None:  # the word starting at `first` alone has more than max tokens
                word = section.words[first]
                cut = next((k for k in range(limit, stop) if section.words[k] != word), stop)
                word_end = section.end_before(cut) if cut < stop else end
                pieces.extend(self._split_word(section, first, cut, word_end))
            else:
                pieces.append(_Unit(start, section.end_before(cut), cut - first))
            first = cut
        if first < stop:
            pieces.append(_Unit(section.offsets[first][0], end, stop - first))
        return pieces

    def _split_word(self, section: _Tokenized, first: int, stop: int, end: int) -> list[_Unit]:
        """Pieces of one word longer than a chunk, each counted by tokenizing it alone.

        A fragment of a word tokenizes differently from the same characters
        inside the word, so the section's offsets cannot count it. Only a
        `max_tokens` smaller than one token's re-tokenized length (absurdly
        small) can leave a piece over the limit.
        """
        pieces: list[_Unit] = []
        while first < stop:
            start = section.offsets[first][0]
            cut = min(stop, first + self._max)
            while True:
                piece_end = section.offsets[cut][0] if cut < stop else end
                piece = section.text[start:piece_end]
                count = len(self._tokenizer.encode(piece, add_special_tokens=False))
                if count <= self._max or cut == first + 1:
                    break
                cut -= 1
            pieces.append(_Unit(start, piece_end, count, fragment=True))
            first = cut
        return pieces

    def _pack(self, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """Greedy packing of units into (first, last, token count) triples, with overlap."""
        before = [0, *accumulate(unit.tokens for unit in units)]  # tokens before unit i
        spans: list[tuple[int, int, int]] = []
        first = 0
        while first < len(units):
            stop = first + 1
            # A fragment of a word fills its chunk alone: next to the following
            # fragment it would re-form the word and tokenize differently. No
            # whole unit can take in a fragment either: a word's first
            # fragment is a full `max_tokens` on its own.
            if not units[first].fragment:
                while stop < len(units) and before[stop + 1] - before[first] <= self._max:
                    stop += 1
            spans.append((first, stop - 1, before[stop] - before[first]))
            if stop == len(units):
                break
            # Start the next chunk with the previous one's last whole units,
            # as many as fit the overlap and still leave room for unit `stop`.
            budget = min(self._overlap, self._max - units[stop].tokens)
            nxt = stop
            while nxt - 1 > first and before[stop] - before[nxt - 1] <= budget:
                nxt -= 1
            first = nxt
        return spans
