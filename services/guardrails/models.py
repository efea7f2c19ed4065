"""The models every scanner shares, loaded once at start-up (never at import, never per request).

- the sentence encoder (all-MiniLM-L6-v2 on ONNX Runtime, exported by `make setup`):
  topics and groundedness;
- spaCy's small English NER: persons, places and organisations for PII;
- the injection and toxicity heads over one multilingual encoder (multilingual-e5-small,
  int8), trained by `make setup` from the public sets under tests/data/guardrails.

Each encoder runs one thread per check: checks run side by side in worker threads,
so a check never waits for another's intra-op threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guardrails.classifier import ClassifierModel
from guardrails.multilingual import MultilingualEncoder
from guardrails.scanners.injection import load_injection_model
from guardrails.scanners.pii import load_ner
from guardrails.scanners.toxicity import load_toxicity_model
from guardrails.settings import GuardrailsSettings
from llmops.encoder import OnnxEncoder


@dataclass(frozen=True)
class Models:
    encoder: OnnxEncoder
    ner: Any  # a spaCy Language
    injection: ClassifierModel
    toxicity: ClassifierModel


def load_models(settings: GuardrailsSettings) -> Models:
    heads = settings.models_dir / "guardrails"
    multilingual = MultilingualEncoder(heads, threads=1)
    return Models(
        encoder=OnnxEncoder(
            settings.embedding_model_dir, "int8", max_length=256, intra_op_threads=1
        ),
        ner=load_ner(),
        injection=load_injection_model(heads, multilingual),
        toxicity=load_toxicity_model(heads, multilingual),
    )
