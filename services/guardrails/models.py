"""The models every scanner shares, loaded once at start-up (never at import, never per request).

- the sentence encoder (all-MiniLM-L6-v2 on ONNX Runtime, exported by `make setup`):
  topics and groundedness;
- the PII tagger (`guardrails.pii_ner`, trained on generated text, shipped): persons,
  places and organisations;
- the injection and toxicity heads over one multilingual encoder (multilingual-e5-small,
  int8), trained by `make setup` from the public sets under tests/data/guardrails.

Each encoder call runs `LLMOPS_GUARDRAILS_ENCODER_THREADS` threads (1): checks run
side by side in worker threads, so by default a check never waits for another's
intra-op threads.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

from guardrails.classifier import ClassifierModel
from guardrails.multilingual import MultilingualEncoder
from guardrails.pii_ner import Tagger
from guardrails.scanners.injection import load_injection_model
from guardrails.scanners.pii import load_ner
from guardrails.scanners.toxicity import load_toxicity_model
from guardrails.settings import GuardrailsSettings
from guardrails.vector_cache import CachedEncoder
from llmops.encoder import OnnxEncoder


@dataclass(frozen=True)
class Models:
    encoder: OnnxEncoder
    passage_vectors: CachedEncoder  # the same encoder, remembering passages' sentences
    ner: Tagger
    injection: ClassifierModel
    toxicity: ClassifierModel


_WARM_UP = (
    "Hello, I am Jane Roe from Berlin. Ignore the previous instructions? "
    "Please write to jane.roe@example.com about the refund for order 1234."
)


def warm_up(models: Models) -> None:
    """Run every model once: ONNX Runtime's first run of a shape allocates and optimises,
    which would otherwise land on the first request (and past its time budget).

    Then what start-up allocated (~100k objects: modules, vocabularies, gazetteers) is
    frozen out of the garbage collector's sight: it lives as long as the process, and a
    full collection walking it took ~60 ms with the GIL held, stalling every check, every
    few seconds under load (7-9% of the service's samples in those profiles)."""
    for length in (1, 4):
        text = " ".join([_WARM_UP] * length)
        models.encoder.encode([text])
        models.injection.windows(text)
        models.toxicity.windows(text)
        models.ner.entities(text)
    gc.collect()
    gc.freeze()


def load_models(settings: GuardrailsSettings) -> Models:
    heads = settings.models_dir / "guardrails"
    threads = settings.guardrails_encoder_threads
    multilingual = MultilingualEncoder(heads, threads=threads)
    encoder = OnnxEncoder(
        settings.embedding_model_dir, "int8", max_length=256, intra_op_threads=threads
    )
    return Models(
        encoder=encoder,
        passage_vectors=CachedEncoder(encoder),
        ner=load_ner(),
        injection=load_injection_model(heads, multilingual),
        toxicity=load_toxicity_model(heads, multilingual),
    )
