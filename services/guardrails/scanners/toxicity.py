"""Toxic and abusive language: hate speech, slurs, insults, offensive language.

One logistic-regression head over the multilingual e5 vectors that the
injection scanner also uses (guardrails.classifier), trained on a public set
of labelled tweets (tests/data/guardrails/toxicity/SOURCE.md). The score is
the highest window probability; long texts are scored on their first, last
and cue-bearing windows.
"""

from __future__ import annotations

import re
from pathlib import Path

from guardrails.classifier import ClassifierModel, load_model
from guardrails.multilingual import MultilingualEncoder
from guardrails.scanners.base import Found, Scan, ScanInput
from llmops.guardrails.policy import ToxicityRule

TASK = "toxicity"
REASON = "looks toxic or abusive"
# Second-person address is where abuse of a reader usually sits in a long text.
CUES = re.compile(r"\b(?:you|your|ur|du|dich|dein\w*|ihr|euch)\b|!{2,}", re.IGNORECASE)


def load_toxicity_model(
    models_dir: Path, encoder: MultilingualEncoder | None = None
) -> ClassifierModel:
    """The trained toxicity head (ModelMissingError, saying run make setup, if absent)."""
    return load_model(models_dir, TASK, encoder)


class ToxicityScanner:
    name = "toxicity"

    def __init__(self, rule: ToxicityRule, model: ClassifierModel) -> None:
        self._threshold = rule.threshold
        self._model = model

    def scan(self, item: ScanInput) -> Scan:
        if not item.text.strip():
            return Scan(score=0.0)
        windows = self._model.windows(item.text, CUES, item.memo)
        score = max(w.score for w in windows)
        if score < self._threshold:
            return Scan(score=score)
        spans = [
            Found(self.name, w.start, w.end, w.score) for w in windows if w.score >= self._threshold
        ]
        return Scan(score=score, spans=spans, reason=REASON)
