"""Prompt files, rendering, parameters and label books, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmops.prompts.model import (
    Arm,
    LabelBook,
    PromptEntry,
    PromptError,
    PromptNotFound,
    PromptParams,
    PromptVersion,
    content_digest,
    dump_prompts_file,
    parse_prompts_file,
)
from llmops.v1 import inference_pb2

SEED = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "prompts.yaml"


def _version(user: str, system: str = "", **extra: object) -> PromptVersion:
    entry = PromptEntry.model_validate({"name": "p", "user": user, "system": system, **extra})
    return PromptVersion(
        tenant="t",
        name="p",
        version=2,
        created_at="now",
        created_by="test",
        digest=content_digest(entry),
        **entry.model_dump(exclude={"name", "labels"}),
    )


def test_render_fills_variables_defaults_and_reserved_ones_in_one_pass() -> None:
    prompt = _version(
        "Tone: {tone}. Product: {product}.\n{context}\nQ: {question}",
        system="You help with {product}. Literal braces: {{tone}} and }}.",
        defaults={"tone": "friendly"},
    )
    assert prompt.variables == frozenset({"tone", "product"})
    system, user = prompt.render(
        {"product": "heat pumps {tone}"},
        question="why {product} and {{x}} and {",
        context="[1] passage {question}",
    )
    assert system == "You help with heat pumps {tone}. Literal braces: {tone} and }."
    # Values are never expanded again: braces in a question or passage stay as they are.
    assert user == (
        "Tone: friendly. Product: heat pumps {tone}.\n[1] passage {question}\n"
        "Q: why {product} and {{x}} and {"
    )
    assert prompt.render({"product": "x", "tone": "curt"}, question="q", context="")[1].startswith(
        "Tone: curt."
    )


def test_render_names_every_missing_and_unknown_variable() -> None:
    prompt = _version("{a} {b} {c} {question}", defaults={"c": "3"})
    with pytest.raises(PromptError) as caught:
        prompt.render({"x": "1", "question": "q"}, question="q", context="")
    message = str(caught.value)
    assert "missing variables: a, b" in message
    assert "unknown variables: question, x" in message
    assert "question: filled by the gateway" in message
    assert "its variables: a, b, c" in message
    with pytest.raises(PromptError, match="missing variables: a, b"):
        prompt.check_variables({"c": "given"})  # the gateway's early check, before any work
    prompt.check_variables({"a": "1", "b": "2"})


def test_params_fill_only_what_the_request_left_unset() -> None:
    params = PromptParams(max_tokens=100, temperature=0.2, top_p=0.9, stop=["\n\n"], seed=7)
    empty = params.apply_to(inference_pb2.GenerationParams())
    assert (empty.max_tokens, round(empty.temperature, 5), round(empty.top_p, 5)) == (
        100,
        0.2,
        0.9,
    )
    assert (list(empty.stop), empty.seed) == (["\n\n"], 7)
    own = inference_pb2.GenerationParams(max_tokens=5, temperature=0.0, stop=["END"], seed=1)
    merged = params.apply_to(own)
    assert (merged.max_tokens, merged.temperature, list(merged.stop), merged.seed) == (
        5,
        0.0,  # set to zero by the request: still the request's
        ["END"],
        1,
    )
    assert round(merged.top_p, 5) == 0.9
    assert not PromptParams().apply_to(inference_pb2.GenerationParams()).HasField("temperature")
    assert own.max_tokens == 5 and not own.HasField("top_p")  # the request is not changed


def test_the_seed_file_holds_the_three_prompts() -> None:
    entries = {e.name: e for e in parse_prompts_file(SEED.read_text(), str(SEED))}
    assert list(entries) == ["default", "concise", "eval-judge"]
    assert entries["default"].variables == frozenset()
    assert "Cite every\npassage" not in entries["default"].system  # folded into one line
    assert entries["default"].user == "Context:\n{context}\n\nQuestion: {question}"
    judge = entries["eval-judge"]
    assert judge.variables == frozenset({"reference", "answer"})
    assert "single number from 1 to 5 on the first line" in judge.user
    assert judge.params.temperature == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prompts: [\n", "not YAML"),
        ("- name: x\n", "one key, `prompts:`"),
        ("prompts: []\n", "non-empty list"),
        (
            "prompts:\n  - name: Bad Name\n    user: '{question}'\n",
            "prompts[0] (Bad Name).name: a prompt name",
        ),
        (
            "prompts:\n  - name: ok\n    user: '{question}'\n"
            "  - name: two\n    user: no question\n",
            "prompts[1] (two).user: must contain {question}",
        ),
        (
            "prompts:\n  - name: x\n    user: '{question}'\n    colour: red\n",
            "colour: unknown field",
        ),
        (
            "prompts:\n  - name: x\n    user: '{question}'\n    params: {temperature: 9}\n",
            "prompts[0] (x).params.temperature: Input should be less than or equal to 2",
        ),
        (
            "prompts:\n  - name: x\n    user: '{question} {a}'\n    defaults: {b: '1'}\n",
            "prompts[0] (x): defaults.b: not a variable of the templates (a)",
        ),
        (
            "prompts:\n  - name: x\n    user: '{question}'\n    defaults: {context: '1'}\n",
            "defaults.context: {context} is filled by the gateway",
        ),
        ("prompts:\n  - name: x\n    user: '{question}'\n    labels: [latest]\n", "latest"),
        ("prompts:\n  - name: x\n    user: '{{question}}'\n", "must contain {question}"),
        (
            "prompts:\n  - name: x\n    user: '{question}'\n  - name: x\n    user: '{question}'\n",
            "twice",
        ),
        ("prompts:\n  - just text\n", "prompts[0]: must be a mapping, not str"),
    ],
)
def test_bad_files_name_the_entry_and_field(text: str, expected: str) -> None:
    with pytest.raises(PromptError) as caught:
        parse_prompts_file(text, "my.yaml")
    assert str(caught.value).startswith("my.yaml: ")
    assert expected in str(caught.value)


def test_an_exported_entry_reads_back_identically() -> None:
    prompt = _version(
        "Line one {x}\n  indented: {question}\n",
        system="One line, with: a colon",
        params={"temperature": 0.3, "stop": ["###"]},
        defaults={"x": "{y}"},
        description="d",
    )
    text = dump_prompts_file([prompt.entry(["production", "staging"])])
    assert "user: |" in text  # multi-line text as a block
    (entry,) = parse_prompts_file(text)
    assert content_digest(entry) == prompt.digest
    assert entry.labels == ["production", "staging"]
    assert entry.description == "d"


def test_the_digest_ignores_the_description_only() -> None:
    base = {"name": "p", "user": "{question}"}
    digest = content_digest(PromptEntry.model_validate(base))
    assert content_digest(PromptEntry.model_validate(base | {"description": "new"})) == digest
    for change in ({"system": "s"}, {"model": "m"}, {"params": {"seed": 1}}):
        assert content_digest(PromptEntry.model_validate(base | change)) != digest


def _moved(book: LabelBook, label: str, version: int) -> LabelBook:
    return book.moved(label, [Arm(version=version)], "label", "me", "now")


def test_rollback_walks_back_one_move_at_a_time() -> None:
    book = LabelBook(tenant="t", name="p")
    for version in (1, 2, 3):
        book = _moved(book, "production", version)
    book = _moved(book, "staging", 3)
    assert _moved(book, "production", 3) is book  # no move, nothing recorded
    target = book.rollback_target("production")
    assert target == [Arm(version=2)]
    book = book.moved("production", target, "rollback", "me", "now")
    assert book.rollback_target("production") == [Arm(version=1)]
    book = book.moved("production", [Arm(version=1)], "rollback", "me", "now")
    with pytest.raises(PromptError, match="no earlier version"):
        book.rollback_target("production")
    with pytest.raises(PromptNotFound, match="labels: production, staging, latest"):
        book.rollback_target("canary")
    assert [m.action for m in book.moves] == ["label"] * 4 + ["rollback"] * 2
