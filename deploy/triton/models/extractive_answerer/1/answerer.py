"""Grounded extractive answering: quote the passages' sentences that best answer a question.

Pure standard library, deterministic and fast, so it runs inside Triton's
python backend without weights and is unit-tested without Triton. It never
writes a word that is not in the passages, so every answer is grounded by
construction and cites what it quotes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

NO_ANSWER = "The provided context does not contain an answer to this question."

# BM25, with less length normalisation than the usual b=0.75: sentences are short,
# and a long sentence that holds the answer should not lose to a short title.
_K1 = 1.2
_B = 0.3
# A sentence scoring under this share of the best one is left out: quoting the
# E-902 sentence for a question about E-417 only because both say "error code"
# would mislead.
_RELATIVE_FLOOR = 0.4
# Multiplicative boosts: they reorder relevant sentences, never make an irrelevant one relevant.
_PHRASE_BOOST = 0.25  # per pair of adjacent question terms also adjacent in the sentence
_CODE_BOOST = 0.5  # per code such as "E-417" or "v2" shared with the question

# A small English stopword list: question words and modals match too much to rank by.
_STOPWORD_TEXT = """
a about after all also am an and any are as at be because been before being between both
but by can could did do does doing done during each either for from had has have having he
her here hers him his how i if in into is it its itself just may me might more most must my
no nor not of off on once only or other our ours out over own same shall she should so some
such than that the their theirs them then there these they this those through to too under
until up very was we were what when where which while who whom why will with would you your
yours
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# A word (any script), or a code joined by hyphens/underscores/dots ("e-417", "v1.2").
_TOKEN = re.compile(r"[^\W_]+(?:[-_.][^\W_]+)*")
# Sentence ends (. ! ? then a space, unless a lowercase word follows, as after "e.g."),
# blank lines, and line breaks before list items or headings.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[^a-z\s])|\n\s*\n|\n(?=\s*(?:[-*#]|\d+[.)])\s)")
_PIECE = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Answer:
    """The answer text and the indices of the passages it quotes, in answer order."""

    text: str
    citations: tuple[int, ...]


def answer(question: str, passages: Sequence[str], max_sentences: int = 3) -> Answer:
    """Quote the `max_sentences` sentences that best match `question`.

    Sentences are scored with BM25 over all the passages' sentences; of the
    best, those with a positive score not far below the top one are kept,
    grouped by passage (passages ordered by their best sentence, sentences in
    document order, so each quote reads as written). Nothing relevant gives
    `NO_ANSWER` and no citations.
    Raises ValueError for an empty question or `max_sentences` < 1.
    """
    if not question.strip():
        raise ValueError("the question is empty")
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    sentences = _unique_sentences(passages)  # (passage index, sentence) in document order
    scores = score_sentences(question, [text for _, text in sentences])
    ranked = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    floor = max(scores, default=0.0) * _RELATIVE_FLOOR
    chosen = [i for i in ranked[:max_sentences] if scores[i] > 0 and scores[i] >= floor]
    if not chosen:
        return Answer(NO_ANSWER, ())
    # `chosen` is best first, so each passage's first appearance ranks it.
    citations = tuple(dict.fromkeys(sentences[i][0] for i in chosen))
    order = {passage: rank for rank, passage in enumerate(citations)}
    quoted = sorted(chosen, key=lambda i: (order[sentences[i][0]], i))
    return Answer(" ".join(sentences[i][1] for i in quoted), citations)


def score_sentences(question: str, sentences: Sequence[str]) -> list[float]:
    """BM25 score of each sentence for `question`, the sentences being the collection."""
    docs = [tokenize(sentence) for sentence in sentences]
    terms = tokenize(question)
    query = set(terms)
    if not docs or not query:
        return [0.0] * len(docs)
    df = Counter(term for doc in docs for term in set(doc))
    avgdl = sum(map(len, docs)) / len(docs) or 1.0
    idf = {t: math.log(1 + (len(docs) - df[t] + 0.5) / (df[t] + 0.5)) for t in query}
    phrases = set(itertools.pairwise(terms))
    codes = {t for t in query if any(c.isdigit() for c in t)}
    scores = []
    for doc in docs:
        tf = Counter(doc)
        norm = _K1 * (1 - _B + _B * len(doc) / avgdl)
        score = sum(idf[t] * tf[t] * (_K1 + 1) / (tf[t] + norm) for t in query if tf[t])
        boost = _PHRASE_BOOST * len(phrases & set(itertools.pairwise(doc)))
        boost += _CODE_BOOST * len(codes & tf.keys())
        scores.append(score * (1 + boost))
    return scores


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens without stopwords, lightly stemmed; codes are kept whole."""
    return [_stem(word) for word in _TOKEN.findall(text.lower()) if word not in _STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage, each on one line (wrapped lines are joined)."""
    parts = (" ".join(part.split()) for part in _SENTENCE_BREAK.split(text))
    return [part for part in parts if part]


def stream_pieces(text: str) -> list[str]:
    """Token-ish pieces for streaming: each word with the space after it; they join to `text`."""
    return _PIECE.findall(text)


def _stem(word: str) -> str:
    """Strip a common English suffix so "restarting" meets "restart"; codes stay as they are."""
    if not word.isalpha() or word.endswith("eed"):  # "speed" has no "-ed" to strip
        return word
    for suffix, replacement in (("ies", "y"), ("ing", ""), ("ed", ""), ("s", "")):
        if word.endswith(suffix) and not word.endswith("ss") and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # "submitted" meets "submit"
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word  # "cycle" meets "cycling"


def _unique_sentences(passages: Sequence[str]) -> list[tuple[int, str]]:
    """Every passage's sentences, a sentence repeated by overlapping chunks kept only once."""
    seen: set[str] = set()
    found = []
    for index, passage in enumerate(passages):
        for sentence in split_sentences(passage):
            key = sentence.lower()
            if key not in seen:
                seen.add(key)
                found.append((index, sentence))
    return found
