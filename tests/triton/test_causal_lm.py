"""The causal_lm model in the real Triton, serving the tiny random-weight model.

Checks values, not shapes: the streamed text and the token counts must be
what transformers itself computes from the same model directory (greedy
decoding is deterministic on the CPU), and the counts what its tokenizer says.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference.build_tiny_llm import build
from llmops.triton import TritonStartError, install_model_env, wait_ready
from tests.triton.conftest import Server, StartFn

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "deploy" / "triton" / "models"
MODEL = "causal_lm"
START_TIMEOUT_S = 120.0
RESPONSE_TIMEOUT_S = 30.0
MESSAGES = [
    {"role": "system", "content": "Answer from the passages only."},
    {"role": "user", "content": "What does error E-417 mean?"},
]
Responses = queue.Queue[tuple[Any, InferenceServerException | None]]


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as `make setup` builds it (models/tiny-llm), else built here."""
    built = ROOT / "models" / "tiny-llm"
    if (built / "tiny_llm.json").exists():
        return built
    return build(tmp_path_factory.mktemp("models") / "tiny-llm")


def repository(tmp_path: Path, *models: str) -> Path:
    """A model repository holding only `models` (links to the deployed folders)."""
    repo = tmp_path / "repository"
    repo.mkdir()
    for model in models:
        install_model_env(MODEL_REPOSITORY / model / "python_env")
        (repo / model).symlink_to(MODEL_REPOSITORY / model)
    return repo


@pytest.fixture
def server(
    start: StartFn, tmp_path: Path, tiny_llm: Path, monkeypatch: pytest.MonkeyPatch
) -> Server:
    monkeypatch.setenv("LLMOPS_LLM_PATH", str(tiny_llm))
    started = start(repository(tmp_path, MODEL))
    asyncio.run(wait_ready(started.http_url, START_TIMEOUT_S, started.process, started.log_file))
    return started


@pytest.fixture
def client(server: Server) -> Iterator[tuple[grpcclient.InferenceServerClient, Responses]]:
    responses: Responses = queue.Queue()
    # gRPC honours http_proxy even for 127.0.0.1; Triton is local.
    triton = grpcclient.InferenceServerClient(
        server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)]
    )
    triton.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        yield triton, responses
    finally:
        triton.stop_stream()
        triton.close()


def strings(name: str, values: list[str]) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor


def scalar(name: str, datatype: str, value: float, dtype: Any) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], datatype)
    tensor.set_data_from_numpy(np.array([value], dtype=dtype))
    return tensor


def generate(
    client: tuple[grpcclient.InferenceServerClient, Responses],
    messages: list[dict[str, str]] | None = None,
    prompt: str | None = None,
    **options: Any,
) -> tuple[list[str], int, int]:
    """The streamed pieces and the final (INPUT_TOKENS, OUTPUT_TOKENS); raises Triton's error."""
    triton, responses = client
    if messages is not None:
        inputs = [
            strings("PROMPT", [m["content"] for m in messages]),
            strings("ROLES", [m["role"] for m in messages]),
        ]
    else:
        inputs = [strings("PROMPT", [prompt or ""])]
    if "max_tokens" in options:
        inputs.append(scalar("MAX_TOKENS", "INT32", options["max_tokens"], np.int32))
    if "temperature" in options:
        inputs.append(scalar("TEMPERATURE", "FP32", options["temperature"], np.float32))
    if "top_p" in options:
        inputs.append(scalar("TOP_P", "FP32", options["top_p"], np.float32))
    if "seed" in options:
        inputs.append(scalar("SEED", "INT64", options["seed"], np.int64))
    if "stop" in options:
        inputs.append(strings("STOP", options["stop"]))
    triton.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
    pieces: list[str] = []
    while True:
        result, error = responses.get(timeout=RESPONSE_TIMEOUT_S)
        if error is not None:
            raise error
        if result.get_response().parameters["triton_final_response"].bool_param:
            assert result.as_numpy("TEXT") is None
            counts = (result.as_numpy("INPUT_TOKENS"), result.as_numpy("OUTPUT_TOKENS"))
            return pieces, int(counts[0][0]), int(counts[1][0])
        text = result.as_numpy("TEXT")
        assert text is not None and text.shape == (1,), text
        pieces.append(text[0].decode())


def reference(
    model_dir: Path, messages: list[dict[str, str]], max_tokens: int
) -> tuple[list[int], list[int], str]:
    """transformers' own answer: the prompt's ids, the new ids (greedy), their text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False).input_ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_tokens,
            do_sample=False,
        )
    new = [t for t in out[0, len(prompt) :].tolist() if t != tokenizer.eos_token_id]
    return prompt, new, tokenizer.decode(new, skip_special_tokens=True)


def test_streams_the_greedy_answer_token_by_token_with_the_tokenizer_counts(
    client: tuple[grpcclient.InferenceServerClient, Responses], tiny_llm: Path
) -> None:
    prompt_ids, new_ids, text = reference(tiny_llm, MESSAGES, max_tokens=24)
    pieces, input_tokens, output_tokens = generate(client, MESSAGES, max_tokens=24)
    assert "".join(pieces) == text
    assert input_tokens == len(prompt_ids)
    assert output_tokens == len(new_ids)
    # Streamed as it is decoded: one response per token, but for tokens that end
    # inside a UTF-8 character (held back until it is complete).
    assert 1 < len(pieces) <= output_tokens
    assert all(pieces), pieces


def test_sampling_stop_strings_and_raw_prompts(
    client: tuple[grpcclient.InferenceServerClient, Responses],
) -> None:
    greedy, _, _ = generate(client, MESSAGES, max_tokens=16)
    text = "".join(greedy)
    # A seeded draw repeats; the unseeded default is greedy.
    first = generate(client, MESSAGES, max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    again = generate(client, MESSAGES, max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    assert first == again
    assert generate(client, MESSAGES, max_tokens=16, temperature=0.0)[0] == greedy
    # Generation ends before a STOP string, which is never streamed.
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    pieces, _, output_tokens = generate(client, MESSAGES, max_tokens=16, stop=[stop])
    assert "".join(pieces) == text[: text.find(stop)]
    assert output_tokens < 16
    # Without ROLES, PROMPT is the text itself (no chat template).
    pieces, input_tokens, output_tokens = generate(client, prompt="Hello there", max_tokens=5)
    assert output_tokens == 5 and input_tokens >= 2


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"prompt": " "}, "PROMPT is empty"),
    ({"messages": MESSAGES, "max_tokens": 0}, "MAX_TOKENS must be 1 or more"),
    ({"messages": MESSAGES, "temperature": -1.0}, "TEMPERATURE must be 0 or more"),
    ({"messages": MESSAGES, "temperature": 1.0, "top_p": 0.0}, r"TOP_P must be in \(0, 1\]"),
    ({"messages": MESSAGES, "max_tokens": 5000}, "exceeds the model's 2048 positions"),
]


def test_a_bad_request_gets_one_clear_error(
    client: tuple[grpcclient.InferenceServerClient, Responses],
) -> None:
    for options, message in BAD_REQUESTS:
        with pytest.raises(InferenceServerException, match=message):
            generate(client, **options)
        generate(client, MESSAGES, max_tokens=2)  # and the model still answers


def test_without_llmops_llm_path_it_loads_and_refuses_requests_saying_why(
    start: StartFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set but empty: no default either. A failed load would stop Triton at start-up.
    monkeypatch.setenv("LLMOPS_LLM_PATH", "")
    server = start(repository(tmp_path, MODEL, "extractive_answerer"))
    asyncio.run(wait_ready(server.http_url, START_TIMEOUT_S, server.process, server.log_file))
    triton = grpcclient.InferenceServerClient(
        server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)]
    )
    responses: Responses = queue.Queue()
    triton.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        with pytest.raises(InferenceServerException, match="LLMOPS_LLM_PATH is not set"):
            generate((triton, responses), MESSAGES, max_tokens=4)
    finally:
        triton.stop_stream()
        triton.close()


def test_a_llmops_llm_path_that_is_no_model_fails_the_start_up_loudly(
    start: StartFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_LLM_PATH", str(tmp_path / "nothing-here"))
    server = start(repository(tmp_path, MODEL))
    with pytest.raises(TritonStartError, match="exited with code 1") as error:
        asyncio.run(wait_ready(server.http_url, START_TIMEOUT_S, server.process, server.log_file))
    assert "is not a Hugging Face model directory" in server.log_file.read_text()
    assert "failed to load all models" in str(error.value)
