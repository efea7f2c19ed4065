"""Prompt injections and jailbreaks, English and German (and other e5 languages).

The score is max(classifier, rules): the classifier (logistic regression over
multilingual-e5 vectors, see guardrails.classifier) gives a probability per
window of the text; a few narrow rules for the unmistakable forms ("ignore all
previous instructions", "vergiss alle bisherigen Anweisungen", "reveal your
system prompt", "you are DAN now") give RULE_SCORE when they match anywhere,
so a long passage with one such sentence outside the encoded windows is still
caught. The rules need the override verb *and* a reference to the model's own
instructions, so a question about assembly instructions does not match.
"""

from __future__ import annotations

import re
from pathlib import Path

from guardrails.classifier import ClassifierModel, load_model
from guardrails.multilingual import MultilingualEncoder
from guardrails.scanners.base import Found, Scan, ScanInput
from llmops.guardrails.policy import InjectionRule

TASK = "injection"
RULE_SCORE = 0.95
REASON = "looks like a prompt injection"

_GAP = r"[^.!?\n]{0,40}?"
_RULES = re.compile(
    "|".join(
        [
            # English: override the model's own instructions
            rf"\b(?:ignore|disregard|forget|skip|override|bypass)\b{_GAP}"
            r"\b(?:all|any|previous|prior|above|earlier|preceding|your|the system)\b"
            rf"{_GAP}\b(?:instructions?|prompts?|rules|directions|directives|tasks|guidelines)\b",
            # German
            rf"\b(?:ignorier\w*|vergiss|vergessen sie|missachte\w*|überschreib\w*)\b{_GAP}"
            r"\b(?:alle\w*|vorherige\w*|bisherige\w*|obige\w*|vorige\w*|deine\w*|ihre\w*)\b"
            rf"{_GAP}\b(?:anweisungen|instruktionen|befehle|regeln|aufgaben|vorgaben|prompts?)\b",
            # leak the system prompt
            r"\b(?:show|reveal|print|output|repeat|tell me|give me)\b"
            rf"{_GAP}\b(?:your|the)\s+(?:system|initial|original|hidden)\s+(?:prompt|instructions)\b",
            r"\b(?:zeig\w*|gib|nenne?\w*|verrate?\w*|wiederhole?\w*)\b"
            rf"{_GAP}\b(?:deinen|ihren|den)\s+(?:system-?prompt|ursprünglichen prompt)\b",
            # personas without limits
            r"\b(?:you are now|from now on you are|act as|ab jetzt bist du|du bist jetzt)\b"
            rf"{_GAP}\b(?:DAN|unrestricted|unfiltered|uneingeschränkt\w*|ohne (?:regeln|filter))\b",
            r"\b(?:developer|DAN|jailbreak)\s+mode\b",
        ]
    ),
    re.IGNORECASE,
)
# Words that point the window picker of a long text at the suspicious sentences.
CUES = re.compile(
    r"\b(?:ignore|disregard|forget|instructions?|prompt|system|pretend|act as|now you|"
    r"ignorier\w*|vergiss|anweisung\w*|vergessen|tu so|ab jetzt)\b",
    re.IGNORECASE,
)

# What a text says when it addresses the model rather than a reader: with `require_cue`
# (retrieved passages, documents) a classifier window fires only where one of these is in it.
ADDRESSING = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass|pretend|jailbreak|instructions?|"
    r"(?:system|initial|hidden|original)\s+prompt|you are now|from now on|act as|role-?play|"
    r"you must|do not (?:tell|mention|reveal)|(?:respond|reply|answer) only|as an ai|"
    r"language model|assistant|ignorier\w*|vergiss|anweisung\w*|ab jetzt|du bist jetzt|"
    r"tu so|antworte nur|ignorez|oubliez|ignora|olvida)\b",
    re.IGNORECASE,
)


def rule_matches(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _RULES.finditer(text)]


def load_injection_model(
    models_dir: Path, encoder: MultilingualEncoder | None = None
) -> ClassifierModel:
    """The trained injection head (ModelMissingError, saying run make setup, if absent)."""
    return load_model(models_dir, TASK, encoder)


class InjectionScanner:
    name = "prompt_injection"

    def __init__(self, rule: InjectionRule, model: ClassifierModel) -> None:
        self._threshold = rule.threshold
        self._model = model
        self._require_cue = rule.require_cue

    def scan(self, item: ScanInput) -> Scan:
        if not item.text.strip():
            return Scan(score=0.0)
        if self._require_cue and not ADDRESSING.search(item.text):
            windows = []  # nothing addresses the model: only the rules could fire (they don't)
        else:
            windows = self._model.windows(item.text, CUES, item.memo)
        if self._require_cue:
            windows = [w for w in windows if ADDRESSING.search(item.text, w.start, w.end)]
        spans = [Found(self.name, w.start, w.end, w.score) for w in windows]
        spans += [Found(self.name, a, b, RULE_SCORE) for a, b in rule_matches(item.text)]
        score = max((f.score for f in spans), default=0.0)
        if score < self._threshold:
            return Scan(score=score)
        fired = [f for f in spans if f.score >= self._threshold]
        return Scan(score=score, spans=fired, reason=REASON)
