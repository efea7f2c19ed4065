"""The extractive answerer: its scoring as a pure function, then the model in the real Triton.

The end-to-end test streams over gRPC as a chat client would and checks the
values, not just the shapes: with numpy 2 in the models' venv the python
backend returns empty tensors without any error.
"""

from __future__ import annotations

import asyncio
import importlib.util
import queue
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from llmops.triton import install_model_env, wait_ready
from tests.triton.conftest import StartFn

ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = ROOT / "deploy" / "triton" / "models"
MODEL = "extractive_answerer"
START_TIMEOUT_S = 60.0
RESPONSE_TIMEOUT_S = 10.0


def load_answerer() -> ModuleType:
    """The model's answerer.py, imported by path as Triton would (it is not a package)."""
    path = MODEL_REPOSITORY / MODEL / "1" / "answerer.py"
    spec = importlib.util.spec_from_file_location("extractive_answerer_v1", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


answerer = load_answerer()

HEAT_PUMP = (
    "Error code E-417 means the flow sensor reads less than six litres per minute. "
    "Bleed air from the radiators and check the strainer.\n\n"
    "Error code E-902 signals a high pressure trip in the refrigerant circuit."
)
DEFROST = (
    "In cold and humid weather the outdoor coil collects frost. The controller runs a\n"
    "defrost cycle of two to six minutes whenever the coil drops below minus three degrees."
)
BIKE = "Clean and oil the chain every 500 kilometres. Replace the chain after 3000 kilometres."
PASSAGES = [BIKE, HEAT_PUMP, DEFROST]
E417 = "Error code E-417 means the flow sensor reads less than six litres per minute."
OIL = [
    "Oil the chain with wax in winter.",
    "Our shop is open on Sundays.",
    "Wipe the wet chain with a rag. Oil the chain after rain.",
]
OIL_QUESTION = "how do I oil a wet chain after rain or in winter"


# -- the pure function ----------------------------------------------------------


def test_quotes_the_sentence_that_answers_and_cites_its_passage() -> None:
    result = answerer.answer("How long does a defrost cycle last?", PASSAGES)
    assert result.text == (
        "The controller runs a defrost cycle of two to six minutes whenever the coil drops "
        "below minus three degrees."
    )
    assert result.citations == (2,)


def test_matches_codes_like_e_417_and_leaves_out_the_other_code() -> None:
    result = answerer.answer("What does E-417 mean?", PASSAGES)
    assert result.text == E417
    assert result.citations == (1,)


def test_orders_passages_by_their_best_sentence_and_quotes_each_in_document_order() -> None:
    result = answerer.answer(OIL_QUESTION, OIL)
    assert result.text == (
        "Wipe the wet chain with a rag. Oil the chain after rain. Oil the chain with wax in winter."
    )
    assert result.citations == (2, 0)
    best = answerer.answer(OIL_QUESTION, OIL, max_sentences=1)
    assert best == answerer.Answer("Oil the chain after rain.", (2,))


def test_a_sentence_repeated_by_overlapping_chunks_is_quoted_once() -> None:
    result = answerer.answer("what does E-417 mean", [HEAT_PUMP, E417])
    assert result.text == E417
    assert result.citations == (0,)


def test_no_relevant_sentence_gives_the_honest_answer_without_citations() -> None:
    for passages in (PASSAGES, []):
        result = answerer.answer("What is the capital of France?", passages)
        assert result.text == answerer.NO_ANSWER
        assert result.citations == ()


def test_invalid_requests_raise_a_clear_error() -> None:
    with pytest.raises(ValueError, match="question is empty"):
        answerer.answer("  ", PASSAGES)
    with pytest.raises(ValueError, match="at least 1"):
        answerer.answer("E-417", PASSAGES, 0)


def test_sentences_and_stream_pieces() -> None:
    assert answerer.split_sentences("See e.g. the manual.  Then\nrestart it!\n\n- Done") == [
        "See e.g. the manual.",
        "Then restart it!",
        "- Done",
    ]
    assert answerer.tokenize("Restarting the E-417 pumps") == ["restart", "e-417", "pump"]
    assert answerer.stream_pieces(E417)[:3] == ["Error ", "code ", "E-417 "]
    assert "".join(answerer.stream_pieces(E417)) == E417


# -- served by Triton -----------------------------------------------------------


def stream(
    client: grpcclient.InferenceServerClient,
    responses: queue.Queue[tuple[Any, InferenceServerException | None]],
    question: str,
    passages: list[str],
    max_sentences: int | None = None,
) -> list[Any]:
    """Send one request on the open stream; return its responses up to the final one.

    Raises the server's error if it answers with one.
    """
    inputs = [
        grpcclient.InferInput("QUESTION", [1], "BYTES"),
        grpcclient.InferInput("PASSAGES", [len(passages)], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(np.array([question.encode()], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([p.encode() for p in passages], dtype=np.object_))
    if max_sentences is not None:
        inputs.append(grpcclient.InferInput("MAX_SENTENCES", [1], "INT32"))
        inputs[2].set_data_from_numpy(np.array([max_sentences], dtype=np.int32))
    client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
    received = []
    while True:
        result, error = responses.get(timeout=RESPONSE_TIMEOUT_S)
        if error is not None:
            raise error
        received.append(result)
        if result.get_response().parameters["triton_final_response"].bool_param:
            return received


def test_triton_streams_the_answer_word_by_word_then_the_citations(start: StartFn) -> None:
    install_model_env(MODEL_REPOSITORY / MODEL / "python_env")
    server = start(MODEL_REPOSITORY)
    asyncio.run(wait_ready(server.http_url, START_TIMEOUT_S, server.process, server.log_file))

    responses: queue.Queue[tuple[Any, InferenceServerException | None]] = queue.Queue()
    # gRPC honours http_proxy even for 127.0.0.1; Triton is local.
    client = grpcclient.InferenceServerClient(
        server.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)]
    )
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))

        *pieces, final = stream(client, responses, "What does error E-417 mean?", PASSAGES)
        texts = [r.as_numpy("TEXT") for r in pieces]
        assert all(t is not None and t.shape == (1,) for t in texts), texts
        words = [t[0].decode() for t in texts]
        assert len(words) == len(E417.split()) and all(words), words
        assert "".join(words) == E417
        assert final.as_numpy("TEXT") is None
        assert final.as_numpy("CITATIONS").tolist() == [1]

        *pieces, final = stream(client, responses, OIL_QUESTION, OIL, max_sentences=1)
        assert (
            "".join(r.as_numpy("TEXT")[0].decode() for r in pieces) == "Oil the chain after rain."
        )
        assert final.as_numpy("CITATIONS").tolist() == [2]

        *pieces, final = stream(client, responses, "capital of France?", PASSAGES)
        assert "".join(r.as_numpy("TEXT")[0].decode() for r in pieces) == answerer.NO_ANSWER
        assert final.as_numpy("CITATIONS").tolist() == []

        with pytest.raises(InferenceServerException, match="question is empty"):
            stream(client, responses, " ", PASSAGES)
    finally:
        client.stop_stream()
        client.close()
