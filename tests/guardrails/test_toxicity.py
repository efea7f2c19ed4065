"""The toxicity scanner on real examples and on the public held-out split."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from guardrails.classifier import ModelMissingError, precision_recall_f1
from guardrails.scanners.base import ScanInput
from guardrails.scanners.toxicity import ToxicityScanner, load_toxicity_model
from guardrails.train_classifiers import read_split, split_files, trained_dir
from llmops.guardrails.policy import ToxicityRule

ROOT = Path(__file__).resolve().parents[2]
PRECISION_FLOOR = 0.92  # measured 0.952 on the 1,000-row test split
RECALL_FLOOR = 0.87  # measured 0.904


@pytest.fixture(scope="module")
def scanner() -> ToxicityScanner:
    scratch = Path(tempfile.gettempdir()) / "llmops-guardrails-test-models"
    model = load_toxicity_model(trained_dir(ROOT / "models" / "guardrails", scratch))
    return ToxicityScanner(ToxicityRule(), model)


@pytest.mark.parametrize(
    "text",
    [
        "shut up you stupid bitch, nobody cares what you think",
        "you are a worthless piece of shit and everyone hates you",
        "fuck off and die you ugly loser",
    ],
)
def test_toxic_texts_fire(scanner: ToxicityScanner, text: str) -> None:
    result = scanner.scan(ScanInput(text=text))
    assert result.score >= 0.5, text
    assert result.reason == "looks toxic or abusive"
    assert result.spans


@pytest.mark.parametrize(
    "text",
    [
        "Thanks a lot, the new release fixed my login problem.",
        "How often should I oil my bike chain?",
        "The weather in Hamburg is lovely today, going for a walk by the river.",
    ],
)
def test_civil_texts_pass(scanner: ToxicityScanner, text: str) -> None:
    result = scanner.scan(ScanInput(text=text))
    assert result.score < 0.5, text
    assert result.reason == ""


def test_precision_and_recall_on_the_public_test_split(scanner: ToxicityScanner) -> None:
    texts, labels = read_split(split_files("toxicity")[1])
    assert len(texts) == 1000
    predicted = [scanner.scan(ScanInput(text=t)).score >= 0.5 for t in texts]
    metrics = precision_recall_f1(labels, predicted)
    assert metrics["precision"] >= PRECISION_FLOOR
    assert metrics["recall"] >= RECALL_FLOOR


def test_missing_model_says_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="make setup"):
        load_toxicity_model(tmp_path)
