"""The routes file: the shipped one loads, a bad one fails start-up with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.settings import InferenceSettings
from llmops.routing.errors import RoutesFileError
from llmops.routing.routes import Target, load_routes
from llmops.routing.usage import TokenCounter, load_counters

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_routes_file_routes_answerer_and_llm_to_triton() -> None:
    path = InferenceSettings.model_fields["routes_file"].default
    routes = load_routes(ROOT / path)
    assert routes.default == "answerer"
    targets = routes.targets("")
    assert targets is not None
    assert [t.name for t in targets] == ["triton/extractive_answerer"]
    assert routes.targets("answerer") == targets
    # The answerer reports no usage: the embedding model's tokenizer counts it.
    assert targets[0].tokenizer == "all-MiniLM-L6-v2/tokenizer.json"
    counters = load_counters(routes, ROOT / "models")
    assert set(counters) == {"all-MiniLM-L6-v2/tokenizer.json"}
    llm = routes.targets("llm")
    assert llm is not None and [t.name for t in llm] == ["triton/causal_lm"]
    assert routes.targets("gpt-9") is None


def test_retry_and_circuit_defaults() -> None:
    target = Target.model_validate({"provider": "triton", "model": "m"})
    assert (target.retries, target.backoff_s) == (0, 0.2)
    assert (target.circuit.failures, target.circuit.cooldown_s) == (5, 30.0)
    assert target.tokenizer is None
    assert target.key == "triton/m@"


def test_the_token_counter_counts_without_special_tokens_or_truncation() -> None:
    counter = TokenCounter.load(ROOT / "models" / "all-MiniLM-L6-v2")  # a folder works too
    assert counter.count(["hello world"]) == 2  # no [CLS]/[SEP]
    assert counter.count(["hello world", "", "hello"]) == 3
    assert counter.count(["word " * 1000]) == 1000  # tokenizer.json says truncate at 128


def test_a_tokenizer_that_cannot_load_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("default: a\naliases: {a: [{provider: triton, model: m, tokenizer: nope}]}")
    with pytest.raises(RoutesFileError, match=r"triton/m: cannot load the tokenizer 'nope'"):
        load_counters(load_routes(path), tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default: [unclosed", "not valid YAML"),
        ("default: a\naliases: {b: [{provider: triton, model: m}]}", "default alias 'a'"),
        ("default: a\naliases: {a: []}", "aliases without targets: a"),
        ("default: a\naliases: {a: [{provider: bedrock, model: m}]}", "provider"),
        ("default: a\naliases: {a: [{provider: openai, model: m}]}", "needs base_url"),
        ("default: a\naliases: {a: [{provider: triton, model: m, timeout_s: 0}]}", "timeout_s"),
        ("default: a\naliases: {a: [{provider: triton, model: m, retry: 3}]}", "retry"),
        ("default: a\naliases: {a: [{provider: triton, model: m, retries: -1}]}", "retries"),
        ("default: a\naliases: {a: [{provider: triton, model: m, backoff_s: -1}]}", "backoff_s"),
        (
            "default: a\naliases: {a: [{provider: triton, model: m, circuit: {failures: 0}}]}",
            "failures",
        ),
        (
            "default: a\naliases: {a: [{provider: triton, model: m, circuit: {open: 1}}]}",
            "open",
        ),
    ],
)
def test_a_bad_routes_file_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    with pytest.raises(RoutesFileError, match=message) as raised:
        load_routes(path)
    assert str(path) in str(raised.value)


def test_a_missing_routes_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RoutesFileError, match="cannot read the routes file"):
        load_routes(tmp_path / "nope.yaml")
