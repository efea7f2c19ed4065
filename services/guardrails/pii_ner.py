"""A small tagger for persons, places and organisations: hashed features, linear scores, Viterbi.

spaCy's small NER spent 40-65 ms on a 500-token text, mostly in matrix products; names in
support text are found as well by a linear model over the word, its shape and affixes, its
neighbours and gazetteers of first names, surnames, cities, regions and countries. The
weights (an averaged structured perceptron) and the gazetteers ship in one file that
`guardrails.pii_ner_train` writes; scoring a text is a gather and a sum in numpy, and the
best BIO path costs one small max-plus step per token.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

MODEL = Path(__file__).parent / "data" / "pii_ner.npz"
TYPES = ("PERSON", "LOCATION", "ORGANIZATION")
TAGS = ("O", *(f"{p}-{t}" for t in TYPES for p in "BI"))
GAZETTEERS = ("first", "last", "city", "region", "country")
_TOKEN = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*|\S")
_SHAPE = re.compile(r"(.)\1{2,}")
_GAZ_SPAN = 4  # the longest gazetteer phrase matched, in tokens
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SENTENCE_END = frozenset(".!?:;\"'>")
Ids = npt.NDArray[np.uint64]


def tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode())


@lru_cache(maxsize=65536)
def _word_ids(word: str) -> tuple[int, ...]:
    """The word's own features (lower form, shape, affixes), hashed: a word costs this once."""
    lower = word.lower()
    shape = _SHAPE.sub(
        r"\1\1",
        re.sub(r"[^\W\d_]", lambda m: "X" if m[0].isupper() else "x", re.sub(r"\d", "d", word)),
    )
    return (
        _hash("w=" + lower),
        _hash("s=" + shape),
        _hash("3=" + lower[-3:]),
        _hash("p=" + lower[:3]),
        _hash("2=" + lower[-2:]),
        _hash("c=" + ("T" if word[:1].isupper() else "l") + ("U" if word.isupper() else "")),
    )


_PAD = _word_ids("<pad>")


@dataclass(frozen=True)
class Gazetteer:
    """Phrases by their first lower-cased token, as token tuples, with a bit per list."""

    phrases: dict[str, dict[tuple[str, ...], int]]

    @classmethod
    def build(cls, lists: dict[str, list[str]]) -> Gazetteer:
        phrases: dict[str, dict[tuple[str, ...], int]] = {}
        for bit, name in enumerate(GAZETTEERS):
            for phrase in lists[name]:
                words = tuple(m.group().lower() for m in _TOKEN.finditer(phrase))
                if 0 < len(words) <= _GAZ_SPAN:
                    entry = phrases.setdefault(words[0], {})
                    entry[words] = entry.get(words, 0) | 1 << bit
        return cls(phrases)

    def marks(self, words: list[str]) -> list[int]:
        """Per token, the lists (bits) of every phrase it starts or continues (start: low byte)."""
        marks = [0] * len(words)
        lower = [w.lower() for w in words]
        for i, word in enumerate(lower):
            for phrase, bits in self.phrases.get(word, {}).items():
                n = len(phrase)
                if tuple(lower[i : i + n]) == phrase:
                    marks[i] |= bits
                    for j in range(i + 1, i + n):
                        marks[j] |= bits << 8
        return marks


class Tagger:
    """Finds PERSON, LOCATION and ORGANIZATION spans; `entities(text)` is the hot path."""

    def __init__(
        self,
        weights: npt.NDArray[np.float32],
        transitions: npt.NDArray[np.float32],
        gazetteer: Gazetteer,
    ) -> None:
        self.weights = weights
        self.transitions = transitions
        self.gazetteer = gazetteer
        self.buckets = np.uint64(weights.shape[0])
        allowed = np.zeros((len(TAGS), len(TAGS)), dtype=np.float32)
        for a, prev in enumerate(TAGS):
            for b, tag in enumerate(TAGS):
                if tag.startswith("I-") and prev[2:] != tag[2:]:
                    allowed[a, b] = -1e9  # an I- tag only continues its own type
        self._allowed = allowed
        self._start = np.array([-1e9 if t.startswith("I-") else 0.0 for t in TAGS], np.float32)

    @classmethod
    def load(cls, path: Path = MODEL) -> Tagger:
        with np.load(path, allow_pickle=False) as f:
            weights = f["weights"].astype(np.float32)
            lists = {name: bytes(f[f"gaz_{name}"]).decode().split("\n") for name in GAZETTEERS}
            return cls(weights, f["transitions"].astype(np.float32), Gazetteer.build(lists))

    def features(self, text: str, spans: list[tuple[int, int]]) -> npt.NDArray[np.intp]:
        """Bucket ids, one row of features per token."""
        words = [text[s:e] for s, e in spans]
        n = len(words)
        own = np.array([_PAD, _PAD, *(_word_ids(w) for w in words), _PAD, _PAD], dtype=np.uint64)
        marks = self.gazetteer.marks(words)
        starts: list[int] = []
        for i, (s, _) in enumerate(spans):
            prev = spans[i - 1][1] if i else 0
            line = i == 0 or "\n" in text[prev:s] or (words[i - 1] == ">" and starts[-1] >= 2)
            sentence = line or words[i - 1] in _SENTENCE_END
            starts.append(2 * line + sentence)
        dynamic = np.array([marks, starts], dtype=np.uint64).T  # (n, 2)
        dyn = np.zeros((n + 2, 2), dtype=np.uint64)
        dyn[1 : n + 1] = dynamic
        columns: list[Ids] = [own[2 : n + 2, k] for k in range(6)]
        for off, slots in ((-2, (0, 1)), (-1, (0, 1, 2, 5)), (1, (0, 1, 2, 5)), (2, (0, 1))):
            columns += [own[2 + off : n + 2 + off, k] for k in slots]
        columns += [dyn[1 + off : n + 1 + off, 0] + np.uint64(1) for off in (-1, 0, 1)]
        columns.append(dynamic[:, 1] * np.uint64(7) + own[2 : n + 2, 1])
        columns.append(dynamic[:, 1] * np.uint64(11) + own[2 : n + 2, 5])
        columns.append(own[1 : n + 1, 0] * np.uint64(31) + own[0:n, 0])  # the two words before
        columns.append(own[1 : n + 1, 0] * np.uint64(37) + own[2 : n + 2, 1])
        columns.append(own[3 : n + 3, 0] * np.uint64(41) + own[2 : n + 2, 1])
        columns.append(np.ones(n, dtype=np.uint64))  # bias
        table = np.stack(columns, axis=1)
        salts = np.arange(1, table.shape[1] + 1, dtype=np.uint64) * _MIX
        mixed = (table ^ salts) * _MIX
        return ((mixed >> np.uint64(29)) % self.buckets).astype(np.intp)

    def scores(self, ids: npt.NDArray[np.intp]) -> npt.NDArray[np.float32]:
        summed: npt.NDArray[np.float32] = self.weights[ids].sum(axis=1)
        return summed

    def decode(self, scores: npt.NDArray[np.float32]) -> list[int]:
        """The best tag path under the learnt transitions and the BIO constraint."""
        trans = self.transitions + self._allowed
        best = self._start + scores[0]
        back = []
        for row in scores[1:]:
            cand = best[:, None] + trans
            arg = cand.argmax(axis=0)
            back.append(arg)
            best = cand[arg, np.arange(len(TAGS))] + row
        path = [int(best.argmax())]
        for arg in reversed(back):
            path.append(int(arg[path[-1]]))
        return path[::-1]

    def entities(self, text: str) -> list[tuple[str, int, int]]:
        spans = tokens(text)
        if not spans:
            return []
        return spans_of(self.decode(self.scores(self.features(text, spans))), spans)


def spans_of(path: list[int], spans: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    """Character spans of the B-/I- runs of a tag path."""
    found: list[tuple[str, int, int]] = []
    for (start, end), tag in zip(spans, (TAGS[t] for t in path), strict=True):
        if tag.startswith("B-"):
            found.append((tag[2:], start, end))
        elif tag.startswith("I-") and found and found[-1][0] == tag[2:]:
            found[-1] = (tag[2:], found[-1][1], end)
    return found
