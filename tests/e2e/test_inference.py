"""gRPC `Generate` against the running platform: streamed from the real Triton answerer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmops.grpcutil import channel
from llmops.routing.usage import TokenCounter
from llmops.v1 import gateway_pb2_grpc, inference_pb2, inference_pb2_grpc
from tests.e2e.gateway_support import ask
from tests.e2e.test_observability import sample, scrape
from tests.inference.openai_mock import serve
from tests.support import ROOT, Platform, free_port, run_platform
from tests.triton.test_causal_lm import reference
from tests.triton.test_extractive_answerer import E417, PASSAGES  # the same sample passages

ANSWERER = "triton/extractive_answerer"
CAUSAL_LM = "triton/causal_lm"
TIMEOUT = 30.0
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
INFERENCE_GENERATE = "/llmops.v1.Inference/Generate"
TINY_LLM = ROOT / "models" / "tiny-llm"  # LLMOPS_LLM_PATH's default: built by make setup


@pytest.fixture
async def inference(platform: Platform) -> AsyncIterator[inference_pb2_grpc.InferenceStub]:
    ch: grpc.aio.Channel = channel(platform.addr("inference"))
    yield inference_pb2_grpc.InferenceStub(ch)
    await ch.close()


async def generate(
    stub: inference_pb2_grpc.InferenceStub, **fields: object
) -> tuple[list[str], inference_pb2.Final]:
    """Every delta's text, in order, and the final message (which must come last)."""
    request = inference_pb2.GenerateRequest(**fields)  # type: ignore[arg-type]
    responses = [r async for r in stub.Generate(request, timeout=TIMEOUT)]
    *deltas, final = responses
    assert all(r.WhichOneof("event") == "delta" for r in deltas), responses
    assert final.WhichOneof("event") == "final", responses
    return [r.delta.text for r in deltas], final.final


async def test_generate_streams_the_answer_in_order_then_its_citations(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    pieces, final = await generate(
        inference,
        model="answerer",
        prompt="What does error E-417 mean?",
        context=PASSAGES,
        tenant="inference-e2e",
        request_id="req-1",
    )
    # One piece per word; pieces that pile up while a delta is being sent go out joined.
    assert 1 <= len(pieces) <= len(E417.split()) and all(pieces), pieces
    assert pieces[0].startswith("Error ")
    assert "".join(pieces) == E417
    assert list(final.citations) == [1]
    assert final.model_used == ANSWERER
    assert final.output_pieces == len(E417.split())
    assert final.time_to_first_token_ms > 0
    # Counted by the embedding model's tokenizer (the target's `tokenizer:`), not in words.
    counter = TokenCounter.load(MINILM)
    assert final.usage.input_tokens == counter.count(["What does error E-417 mean?", *PASSAGES])
    assert final.usage.output_tokens == counter.count([E417])
    assert final.usage.output_tokens != len(E417.split())
    assert list(final.failed_targets) == []


async def test_the_llm_alias_streams_the_causal_lm_tokens_with_its_tokenizer_counts(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    messages = [
        {"role": "system", "content": "Answer from the passages. [1] E-417 means low flow."},
        {"role": "user", "content": "What does error E-417 mean?"},
    ]
    prompt_ids, new_ids, text = reference(TINY_LLM, messages, max_tokens=20)
    pieces, final = await generate(
        inference,
        model="llm",
        prompt="What does error E-417 mean?",
        messages=[inference_pb2.ChatMessage(**m) for m in messages],
        params=inference_pb2.GenerationParams(max_tokens=20, temperature=0.0),
        request_id="req-llm",
    )
    assert "".join(pieces) == text
    assert 1 <= len(pieces) <= final.output_pieces <= len(new_ids)
    assert final.output_pieces > 1
    assert final.model_used == CAUSAL_LM
    assert final.usage.input_tokens == len(prompt_ids)
    assert final.usage.output_tokens == len(new_ids)
    # Streamed or read whole, a caller gets the same counts.
    again = [
        r
        async for r in inference.Generate(
            inference_pb2.GenerateRequest(
                model="llm",
                messages=[inference_pb2.ChatMessage(**m) for m in messages],
                params=inference_pb2.GenerationParams(max_tokens=20),
            ),
            timeout=TIMEOUT,
        )
    ]
    assert again[-1].final.usage == final.usage


async def test_list_models_names_the_shipped_aliases(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    listed = await inference.ListModels(inference_pb2.ListModelsRequest(), timeout=TIMEOUT)
    assert listed.default == "answerer"
    assert [(a.name, list(a.targets)) for a in listed.aliases] == [
        ("answerer", [ANSWERER]),
        ("llm", [CAUSAL_LM]),
    ]


async def test_the_default_alias_and_max_sentences(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    oil = [
        "Oil the chain with wax in winter.",
        "Our shop is open on Sundays.",
        "Wipe the wet chain with a rag. Oil the chain after rain.",
    ]
    question = "how do I oil a wet chain after rain or in winter"
    pieces, final = await generate(inference, prompt=question, context=oil, max_sentences=1)
    assert "".join(pieces) == "Oil the chain after rain."
    assert list(final.citations) == [2]
    assert final.model_used == ANSWERER


async def test_an_unknown_alias_is_not_found_and_lists_the_known_ones(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await generate(inference, model="gpt-9", prompt="What does E-417 mean?", context=PASSAGES)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "gpt-9" in (raised.value.details() or "")
    assert "answerer" in (raised.value.details() or "")


@pytest.mark.parametrize("prompt", ["", "  \n"])
async def test_an_empty_prompt_is_invalid(
    inference: inference_pb2_grpc.InferenceStub, prompt: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await generate(inference, prompt=prompt, context=PASSAGES)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "prompt is empty" in (raised.value.details() or "")


async def test_a_client_that_cancels_mid_stream_leaves_the_service_answering(
    inference: inference_pb2_grpc.InferenceStub,
) -> None:
    request = inference_pb2.GenerateRequest(prompt="What does E-417 mean?", context=PASSAGES)
    call = inference.Generate(request, timeout=TIMEOUT)
    first = await call.read()
    assert first.WhichOneof("event") == "delta"
    call.cancel()
    pieces, _ = await generate(inference, prompt="What does E-417 mean?", context=PASSAGES)
    assert "".join(pieces) == E417


def thread_states(pid: int) -> list[str]:
    """The state letter of each thread of `pid` (Linux /proc)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return states


async def stopped(pid: int, timeout_s: float = 5.0) -> None:
    """Wait until every thread of `pid` is stopped (a SIGSTOP takes effect per thread)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        states = thread_states(pid)
        if states and all(state in "Tt" for state in states):
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"process {pid} did not stop")


ROUTES = """\
default: answerer
aliases:
  answerer:
    - {provider: triton, model: not_deployed, timeout_s: 5}
    - {provider: triton, model: extractive_answerer, timeout_s: 5}
  llm:
    - provider: triton
      model: causal_lm
      timeout_s: 5
      retries: 2
      backoff_s: 0.2
      circuit: {failures: 3, cooldown_s: 2}
  llm_or_answerer:
    - {provider: triton, model: causal_lm, timeout_s: 5, circuit: {failures: 3, cooldown_s: 2}}
    - {provider: triton, model: extractive_answerer, timeout_s: 5}
"""


async def test_falls_back_past_a_failing_target_and_is_unavailable_when_triton_hangs(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    # No LLM: causal_lm loads but refuses every request; Triton serves the answerer.
    extra = {"LLMOPS_ROUTES_FILE": str(routes), "LLMOPS_LLM_PATH": ""}
    with run_platform(tmp_path / "data", triton=True, extra_env=extra) as platform:
        async with channel(platform.addr("inference")) as ch:
            stub = inference_pb2_grpc.InferenceStub(ch)
            # not_deployed fails before streaming anything: the answerer answers instead.
            pieces, final = await generate(stub, prompt="What does E-417 mean?", context=PASSAGES)
            assert "".join(pieces) == E417
            assert final.model_used == ANSWERER
            [failed] = final.failed_targets
            assert failed.startswith(
                "triton/not_deployed: model 'not_deployed' is not loaded in Triton"
            ), failed

            # An alias whose only model has nothing to serve: retried with backoff, then
            # UNAVAILABLE saying why.
            started = asyncio.get_running_loop().time()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await generate(stub, model="llm", prompt="What does E-417 mean?")
            assert asyncio.get_running_loop().time() - started >= 0.2 + 0.4
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            details = raised.value.details() or ""
            assert "no target of model alias 'llm' answered: triton/causal_lm: " in details
            assert "causal_lm serves no model: LLMOPS_LLM_PATH is not set" in details, details
            assert "(after 3 attempts)" in details, details

            # Three failures in a row opened its circuit: skipped at once, the answerer answers.
            pieces, final = await generate(
                stub, model="llm_or_answerer", prompt="What does E-417 mean?", context=PASSAGES
            )
            assert final.model_used == ANSWERER
            [failed] = final.failed_targets
            assert failed.startswith(
                "triton/causal_lm: circuit open after 3 consecutive failures"
            ), failed
            await asyncio.sleep(2)  # the cool-down: one probe goes to causal_lm, and fails
            _, final = await generate(
                stub, model="llm_or_answerer", prompt="What does E-417 mean?", context=PASSAGES
            )
            assert "LLMOPS_LLM_PATH is not set" in final.failed_targets[0]
            _, final = await generate(
                stub, model="llm_or_answerer", prompt="What does E-417 mean?", context=PASSAGES
            )
            assert "circuit open" in final.failed_targets[0]

            triton = platform.pid("triton")
            os.kill(triton, signal.SIGSTOP)  # accepts connections, never answers
            await stopped(triton)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await asyncio.wait_for(
                        generate(stub, prompt="What does E-417 mean?", context=PASSAGES), TIMEOUT
                    )
            finally:
                os.kill(triton, signal.SIGCONT)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            details = raised.value.details() or ""
            assert "no target of model alias 'answerer' answered" in details, details
            assert "triton/not_deployed: no response from Triton" in details, details
            assert "triton/extractive_answerer: no response from Triton" in details, details
            assert "within 5s" in details, details


async def test_streamed_calls_are_counted_by_status_code(
    platform: Platform, inference: inference_pb2_grpc.InferenceStub
) -> None:
    await generate(inference, prompt="What does error E-417 mean?", context=PASSAGES)
    with pytest.raises(grpc.aio.AioRpcError):
        await generate(inference, model="no-such-alias", prompt="hi", context=PASSAGES)
    method = "/llmops.v1.Inference/Generate"
    for _ in range(50):  # the status reaches the client a moment before the counter moves
        text = scrape(platform, "inference")
        if sample(text, "llmops_grpc_requests_total", method=method, code="NOT_FOUND"):
            break
        await asyncio.sleep(0.05)
    assert sample(text, "llmops_grpc_requests_total", method=method, code="OK") >= 1
    assert sample(text, "llmops_grpc_requests_total", method=method, code="NOT_FOUND") >= 1
    assert sample(text, "llmops_grpc_request_seconds_count", method=method) >= 2


OPENAI_ROUTES = """\
default: chat
aliases:
  chat:
    - {{provider: openai, model: dead, base_url: "http://127.0.0.1:{dead}/v1", timeout_s: 2}}
    - provider: openai
      model: mock-chat
      base_url: "{live}"
      api_key_env: LLMOPS_TEST_OPENAI_KEY
      timeout_s: 5
"""


async def test_an_openai_alias_falls_back_past_a_dead_upstream_to_a_streaming_one(
    tmp_path: Path,
) -> None:
    pieces = ["The flow ", "sensor reads ", "low [2]."]
    async with serve(pieces) as mock:
        routes = tmp_path / "routes.yaml"
        routes.write_text(OPENAI_ROUTES.format(dead=free_port(), live=mock.base_url))
        extra = {"LLMOPS_ROUTES_FILE": str(routes), "LLMOPS_TEST_OPENAI_KEY": "sk-e2e"}
        with run_platform(tmp_path / "data", triton=False, extra_env=extra) as platform:
            async with channel(platform.addr("inference")) as ch:
                stub = inference_pb2_grpc.InferenceStub(ch)
                got, final = await generate(stub, prompt="What does E-417 mean?", context=PASSAGES)
    assert "".join(got) == "".join(pieces)  # pieces that arrive together may be one delta
    assert final.model_used == "openai/mock-chat"
    assert list(final.citations) == []
    assert final.output_pieces == len(pieces)
    [received] = mock.requests
    assert received.headers["authorization"] == "Bearer sk-e2e"


async def test_a_gateway_with_local_routing_calls_triton_itself(
    platform: Platform, tmp_path: Path
) -> None:
    """LLMOPS_ROUTING=local: the gateway routes even Triton aliases in-process, so the answer
    comes from Triton without a Generate call to the inference service."""
    gateway = platform.another_gateway(tmp_path, LLMOPS_ROUTING="local")
    method = "/llmops.v1.Inference/Generate"
    gateway.start()
    try:
        await gateway.wait_healthy()
        before = sample(
            scrape(platform, "inference"), "llmops_grpc_request_seconds_count", method=method
        )
        reply = await gateway_pb2_grpc.GatewayStub(gateway.channel).ChatOnce(
            ask("What does error E-417 mean?", retrieval_off=True, no_cache=True),
            metadata=(("authorization", f"Bearer {platform.api_key}"),),
            timeout=TIMEOUT,
        )
        after = sample(
            scrape(platform, "inference"), "llmops_grpc_request_seconds_count", method=method
        )
    finally:
        gateway.stop()
        await gateway.close()
    assert reply.final.model_used == ANSWERER and reply.text
    assert after == before
