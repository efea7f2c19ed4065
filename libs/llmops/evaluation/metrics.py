"""Reference-based answer metrics: pure, deterministic, no model and no service; scores in [0, 1].

Exact match and token F1 are SQuAD's (answers normalised the same way, so "The Eiffel
Tower." matches "eiffel tower"); ROUGE-L, BLEU and chrF come from rouge-score and sacrebleu
rather than our own n-gram code, so figures agree with what papers and other tools report.
Context precision and recall judge retrieval against the documents a golden item names.

ROUGE-L tokenises with Unicode word characters instead of rouge-score's default
(`[a-z0-9]+`), which would drop every umlaut and every non-Latin script; it does not stem
(Porter is English-only), so "runs" and "run" differ as they do in BLEU and exact match.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Collection, Sequence
from functools import cache
from typing import TYPE_CHECKING

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer  # type: ignore[import-untyped]

# Pass/fail metrics: a paired comparison uses McNemar on them, not Wilcoxon.
BINARY_METRICS: frozenset[str] = frozenset({"exact_match", "refusal"})

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_WORD = re.compile(r"\w+")
_BLEU = BLEU(effective_order=True)  # sentence BLEU: without it a short answer scores 0
_CHRF = CHRF()

_REFUSALS = re.compile(
    "|".join(
        (
            # English
            r"\bi (?:do not|don't|dont) know\b",
            r"\bi (?:cannot|can't|can not|am unable to|'m unable to|am not able to) "
            r"(?:answer|find|determine|tell|say|provide|help)",
            r"\bcannot be answered\b",
            r"\b(?:passages?|context|documents?|sources?|texts?|provided information)\b"
            r"[^.]{0,40}\b(?:do not|don't|does not|doesn't) "
            r"(?:contain|mention|say|include|provide|specify|cover|state)",
            r"\bnot (?:mentioned|stated|covered|specified|found|provided|contained) in the "
            r"(?:passages?|context|documents?|sources?|provided)",
            r"\b(?:there is|there's|i have|i found) no (?:information|mention)\b",
            # German
            r"\bich wei(?:ß|ss) (?:es |das )?(?:leider )?nicht\b",
            r"\bnicht (?:beantworten|beantwortet werden)\b",
            r"\bkann ich (?:leider )?nicht sagen\b",
            r"\b(?:passagen|dokumente|quellen|texte|unterlagen|kontext)\b[^.]{0,40}"
            r"\b(?:enthalten|enthält)\b[^.]{0,60}\b(?:keine|nicht)\b",
            r"\bkeine (?:informationen|angaben|hinweise)\b",
            r"\bnicht in den (?:passagen|dokumenten|quellen|texten|unterlagen)\b",
        )
    )
)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces.

    Punctuation is every Unicode punctuation character (SQuAD's ASCII set and also „“ « »
    and the like), so German and typographic quotes normalise too."""
    lowered = text.lower()
    no_punct = "".join(
        " " if unicodedata.category(c).startswith("P") or c in string.punctuation else c
        for c in lowered
    )
    return " ".join(_ARTICLES.sub(" ", no_punct).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised tokens; two empty answers agree (1), one empty scores 0."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


class _UnicodeWords:
    """rouge-score tokenizer: lower-cased Unicode words (see the module docstring)."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


@cache
def _rouge() -> RougeScorer:
    """Built on first use: rouge-score imports nltk, a second of start-up nobody else needs."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_UnicodeWords())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of words)."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


def bleu(prediction: str, reference: str) -> float:
    """sacrebleu sentence BLEU (13a tokens, exponential smoothing, effective order) / 100."""
    return _clip(_BLEU.sentence_score(prediction, [reference]).score / 100)


def chrf(prediction: str, reference: str) -> float:
    """sacrebleu sentence chrF (character 6-grams, beta 2) / 100."""
    return _clip(_CHRF.sentence_score(prediction, [reference]).score / 100)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity clipped to [0, 1] (opposed vectors score like unrelated ones);
    a zero vector is similar to nothing."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return _clip(dot / norms) if norms else 0.0


def _ranked_ids(retrieved: Sequence[str]) -> list[str]:
    """Document ids in rank order, each once at its best rank (several chunks of one
    document are one retrieved document)."""
    return list(dict.fromkeys(retrieved))


def context_precision(retrieved: Sequence[str], expected: Collection[str]) -> float:
    """Ragas-style rank-weighted precision: the mean of precision@k over the ranks k that hold
    an expected document. Relevant documents ranked first score 1; the same documents
    behind irrelevant ones score less. Nothing expected or nothing relevant retrieved: 0."""
    relevant = set(expected)
    found = 0
    total = 0.0
    for k, doc in enumerate(_ranked_ids(retrieved), start=1):
        if doc in relevant:
            found += 1
            total += found / k
    return total / found if found else 0.0


def context_recall(retrieved: Sequence[str], expected: Collection[str]) -> float:
    """The share of expected documents that were retrieved (nothing expected: 0)."""
    relevant = set(expected)
    if not relevant:
        return 0.0
    return len(relevant.intersection(retrieved)) / len(relevant)


def is_refusal(answer: str) -> bool:
    """Whether the answer declines ("I don't know", "the passages do not contain ...",
    "cannot answer", and their German equivalents); an empty answer is a refusal."""
    text = answer.strip().lower().replace("\u2019", "'")
    return not text or _REFUSALS.search(text) is not None


def reference_scores(
    answer: str, reference: str | None, retrieved: Sequence[str], expected: Collection[str]
) -> dict[str, float]:
    """What an offline item gets without a service: the text metrics when it has a reference
    (None or "" = none), context precision and recall when it names expected documents, and
    refusal (0/1) always."""
    scores: dict[str, float] = {}
    if reference:
        scores.update(
            exact_match=exact_match(answer, reference),
            token_f1=token_f1(answer, reference),
            rouge_l=rouge_l(answer, reference),
            bleu=bleu(answer, reference),
            chrf=chrf(answer, reference),
        )
    if expected:
        scores.update(
            context_precision=context_precision(retrieved, expected),
            context_recall=context_recall(retrieved, expected),
        )
    scores["refusal"] = float(is_refusal(answer))
    return scores


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))
