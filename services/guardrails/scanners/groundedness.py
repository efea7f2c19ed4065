"""Groundedness: answer sentences with no support in the retrieved passages.

A sentence is supported when most of its content words appear in one passage (cheap, and
it decides most copied or lightly rephrased sentences without the encoder), or when its
embedding is at least `rule.min_support` from a passage sentence (embedding whole passages
too would cost 2.5 times as much for little: an answer sentence matches a sentence best).
Only the sentences left undecided by the words are embedded. A sentence whose numbers appear in no
passage is unsupported whatever its similarity: an invented date or amount reads just like
the right one to an embedding. Sentences of fewer than four words ("Yes.", "See [2].") and
citation markers are ignored.

Score: the share of the checked sentences' characters that are unsupported (a long invented
sentence counts more than a short one). No passages: score 0, nothing to check against.
Passage vectors are computed once per request, and sentence verdicts once per sentence, in
`item.memo`, so a streamed answer re-checked at every chunk costs only its new sentences;
while it streams, only its complete sentences are checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from guardrails.scanners.base import Found, Scan, ScanInput
from guardrails.sentences import last_sentence_end, sentence_spans
from guardrails.vector_cache import CachedEncoder
from llmops.encoder import OnnxEncoder
from llmops.guardrails.policy import GroundednessRule

UNSUPPORTED = "UNSUPPORTED_SENTENCE"
MIN_WORDS = 4
LEXICAL_SUPPORT = 0.8  # share of a sentence's content words found in one passage
_MEMO = "groundedness"
_CITATION = re.compile(r"\[\d+(?:\s*[,-]\s*\d+)*\]|【\d+[^】]*】|\[\^?\d+\]")
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")
_STOPWORDS = frozenset(
    _WORD.findall(
        "a an the and or but if then so of to in on at by for from with without as is are was "
        "were be been being it its this that these those there here which who whom whose what "
        "when where why how not no yes do does did done has have had can could will would shall "
        "should may might must also very more most much many some any all each such than too "
        "into about over under between after before during i you he she we they me him her us "
        "them my your his our their"
    )
)


@dataclass(slots=True)
class _Passages:
    """One request's passages, prepared once: their words, numbers, units and vectors."""

    texts: tuple[str, ...]
    words: list[frozenset[str]]
    numbers: frozenset[str]
    vectors: npt.NDArray[np.float32] | None = None  # of the passages' sentences
    verdicts: dict[str, float] = field(default_factory=dict)  # sentence -> support


class GroundednessScanner:
    name = "groundedness"

    def __init__(
        self, rule: GroundednessRule, encoder: OnnxEncoder, passage_vectors: CachedEncoder
    ) -> None:
        self.rule = rule
        self._encoder = encoder
        self._passage_vectors = passage_vectors

    def scan(self, item: ScanInput) -> Scan:
        if not any(p.strip() for p in item.passages):
            return Scan(0.0, reason="no passages to check against")
        passages = self._passages(item)
        end = len(item.text) if item.final else last_sentence_end(item.text)
        sentences = [
            (start, stop, cleaned)
            for start, stop in sentence_spans(item.text[:end])
            if len(_WORD.findall(cleaned := _clean(item.text[start:stop]))) >= MIN_WORDS
        ]
        if not sentences:
            return Scan(0.0)
        todo = [s for _, _, s in sentences if s not in passages.verdicts]
        passages.verdicts.update(self._support(passages, todo))
        spans = []
        checked = unsupported = 0
        for start, stop, sentence in sentences:
            support = passages.verdicts[sentence]
            checked += stop - start
            if support < self.rule.min_support:
                unsupported += stop - start
                spans.append(Found(UNSUPPORTED, start, stop, round(1 - support, 4)))
        score = unsupported / checked
        reason = f"{len(spans)} of {len(sentences)} sentences not supported by the passages"
        return Scan(score, spans, reason if spans else "")

    def prepare(self, item: ScanInput) -> None:
        """Embed the passages before the answer's first sentence arrives (at the stream's
        start, while the model is still thinking), so that sentence does not wait for it."""
        if item.passages:
            self._vectors(self._passages(item))

    def _vectors(self, passages: _Passages) -> npt.NDArray[np.float32]:
        if passages.vectors is None:  # passage sentences: whole passages cost 2.5x more
            units = [p[a:b] for p in passages.texts for a, b in sentence_spans(p)]
            passages.vectors = self._passage_vectors.encode(units)
        return passages.vectors

    def _passages(self, item: ScanInput) -> _Passages:
        texts = tuple(item.passages)
        memo = item.memo.get(_MEMO)
        if isinstance(memo, _Passages) and memo.texts == texts:
            return memo
        words = [frozenset(_content_words(p)) for p in texts]
        numbers = frozenset(n for p in texts for n in _numbers(p))
        prepared = item.memo[_MEMO] = _Passages(texts, words, numbers)
        return prepared

    def _support(self, passages: _Passages, sentences: Sequence[str]) -> dict[str, float]:
        """Each sentence's support: 1.0 by its words, 0.0 for invented numbers, else cosine."""
        support: dict[str, float] = {}
        embed = []
        for sentence in sentences:
            if not set(_numbers(sentence)) <= passages.numbers:
                support[sentence] = 0.0
            elif _lexical(sentence, passages.words) >= LEXICAL_SUPPORT:
                support[sentence] = 1.0
            else:
                embed.append(sentence)
        if embed:
            similarity = self._encoder.encode(embed).vectors @ self._vectors(passages).T
            support.update(zip(embed, similarity.max(axis=1).tolist(), strict=True))
        return support


def _clean(sentence: str) -> str:
    """The sentence without citation markers and a leading list marker."""
    return _LIST_MARKER.sub("", _CITATION.sub(" ", sentence))


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 1]


def _numbers(text: str) -> list[str]:
    """Numbers of two digits or more (dates, amounts): "3 steps" is often the answer's own."""
    return [n.replace(",", "") for n in _NUMBER.findall(text) if len(n) > 1]


def _lexical(sentence: str, passage_words: list[frozenset[str]]) -> float:
    """The largest share of the sentence's content words that one passage holds."""
    words = set(_content_words(sentence))
    if not words:
        return 0.0
    return max(len(words & p) / len(words) for p in passage_words)
