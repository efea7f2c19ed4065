"""The gateway's pure parts: prompt rendering, OpenAI bodies, cache keys, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.caches import request_digest, semantic_scope
from gateway.errors import GatewayError
from gateway.openai_api import chat_request
from gateway.pipeline import _marked
from gateway.prompts import Passage, choose_prompt, render
from llmops.prompts.mirror import PromptMirror
from llmops.prompts.model import PromptVersion, parse_prompts_file
from llmops.redaction import redact
from llmops.v1 import gateway_pb2, inference_pb2

PROMPTS = Path(__file__).parents[2] / "deploy" / "gateway" / "prompts.yaml"


def _seed(name: str) -> PromptVersion:
    """A prompt of the seed file as the registry would store it (version 1)."""
    entry = next(e for e in parse_prompts_file(PROMPTS.read_text()) if e.name == name)
    content = entry.model_dump(exclude={"name", "labels"})
    return PromptVersion(
        tenant="default",
        name=name,
        version=1,
        created_at="",
        created_by="test",
        digest="d",
        **content,
    )


def test_the_seed_prompt_renders_numbered_passages_and_the_question() -> None:
    history = [inference_pb2.ChatMessage(role="assistant", content="Hi {context}")]
    request = gateway_pb2.ChatRequest()
    messages = render(
        _seed("default"),
        request,
        history,
        "What is {question}?",
        [Passage(1, "Alpha."), Passage(2, "Beta.")],
    )
    roles = [m.role for m in messages]
    assert roles == ["system", "assistant", "user"]
    user = messages[-1].content
    assert "[1] Alpha.\n\n[2] Beta." in user
    assert user.endswith("Question: What is {question}?")  # user braces stay literal
    assert messages[1].content == "Hi {context}"


@pytest.mark.parametrize("version", ["0", "x", "v", "-1", "1.5"])
def test_a_prompt_version_must_be_a_number(version: str) -> None:
    request = gateway_pb2.ChatRequest(prompt_version=version)
    with pytest.raises(GatewayError, match="prompt_version must be a version number") as raised:
        choose_prompt(PromptMirror(), "t", request, "r")
    assert raised.value.http_status == 400


def test_an_openai_body_becomes_a_chat_request() -> None:
    chat = chat_request(
        {
            "model": "answerer",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
                },
            ],
            "max_tokens": 12,
            "temperature": 0,
            "stop": "END",
            "seed": 3,
            "llmops": {
                "collection": "manuals",
                "filters": {"lang": "en"},
                "prompt": "concise",
                "retrieval": {"top_k": 3, "mode": "sparse"},
                "cache": {"no_exact": True},
            },
        }
    )
    assert [m.content for m in chat.messages] == ["Be brief.", "Hi there"]
    assert chat.params.max_tokens == 12 and chat.params.HasField("temperature")
    assert chat.params.temperature == 0 and list(chat.params.stop) == ["END"]
    assert chat.collection == "manuals" and dict(chat.filters) == {"lang": "en"}
    assert chat.retrieval.top_k == 3
    assert chat.retrieval.mode == gateway_pb2.SEARCH_MODE_OPTION_SPARSE
    assert chat.cache.no_exact and not chat.cache.no_semantic


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages must be a non-empty list"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "only n=1"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text content"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "llmops": {"retrieval": {"mode": "x"}},
            },
            "llmops.retrieval.mode",
        ),
    ],
)
def test_malformed_openai_bodies_are_refused_with_the_reason(
    body: dict[str, object], message: str
) -> None:
    with pytest.raises(GatewayError, match=message) as raised:
        chat_request(body)
    assert raised.value.http_status == 400


def test_cache_keys_change_with_what_shapes_the_answer_only() -> None:
    def request(**fields: object) -> gateway_pb2.ChatRequest:
        base = gateway_pb2.ChatRequest(
            messages=[inference_pb2.ChatMessage(role="user", content="q")]
        )
        for name, value in fields.items():
            if isinstance(value, gateway_pb2.CacheOptions):
                base.cache.CopyFrom(value)
            else:
                setattr(base, name, value)
        return base

    plain = request()
    assert request_digest("t", plain, "1") == request_digest(
        "t", request(cache=gateway_pb2.CacheOptions(no_semantic=True)), "1"
    )
    assert request_digest("t", plain, "1") != request_digest("u", plain, "1")
    assert request_digest("t", plain, "1") != request_digest("t", plain, "2")
    assert request_digest("t", plain, "1") != request_digest("t", request(model="llm"), "1")
    # The user chose an arm and the label a version: the prompt's digest says what they chose.
    assert request_digest("t", plain, "1") == request_digest(
        "t", request(user="u-1", prompt_label="staging"), "1"
    )
    with_variables = request()
    with_variables.variables["tone"] = "dry"
    assert request_digest("t", plain, "1") != request_digest("t", with_variables, "1")
    assert semantic_scope(plain, "1") == semantic_scope(
        gateway_pb2.ChatRequest(messages=[inference_pb2.ChatMessage(role="user", content="z")]),
        "1",
    )
    assert semantic_scope(plain, "1") != semantic_scope(request(collection="c"), "1")


def test_generative_citations_are_the_bracketed_passage_numbers_in_order() -> None:
    assert _marked(["See [2] and [1", "], also [2] and [9]."], passages=3) == [1, 0]


def test_redaction_masks_personal_data_but_keeps_codes_and_numbers() -> None:
    text = (
        "Mail jane.doe@example.com or call +1 (415) 555-0100; card 4111 1111 1111 1111; "
        "ip 10.0.0.1; ssn 123-45-6789; IBAN DE89 3704 0044 0532 0130 00. Error E-417, 2024, 12.5"
    )
    assert redact(text) == (
        "Mail <EMAIL> or call <PHONE>; card <CARD>; ip <IP>; ssn <SSN>; IBAN <IBAN>. "
        "Error E-417, 2024, 12.5"
    )
