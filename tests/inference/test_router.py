"""The router in both its forms, routing to real local OpenAI-wire servers.

Every test runs twice: in-process (as the gateway runs it for hosted aliases)
and remote (the inference service's servicer on a real gRPC server, called
through `Remote`). Retries with backoff, circuit breakers (real clock, short
cool-downs), Final.failed_targets and Final.usage, on routes built here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from inference.handlers import InferenceServicer
from llmops.grpcutil import channel
from llmops.routing.client import Inference, InProcess, Mode, Remote, Split
from llmops.routing.errors import RouteError
from llmops.routing.providers.openai import OpenAIProvider
from llmops.routing.router import Loadout, Router
from llmops.routing.routes import Routes
from llmops.routing.usage import TokenCounter, load_counters
from llmops.v1 import inference_pb2, inference_pb2_grpc
from tests.inference.openai_mock import OpenAIMock, serve
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
MINILM = "all-MiniLM-L6-v2/tokenizer.json"
PIECES = ["Low ", "flow [1]."]
ANSWER = "".join(PIECES)  # pieces that arrive together may go out as one Delta
MESSAGES = [
    inference_pb2.ChatMessage(role="system", content="Answer from the passages."),
    inference_pb2.ChatMessage(role="user", content="[1] E-417 means low flow.\nWhat is E-417?"),
]

Serve = Callable[[Routes], Awaitable[Inference]]


def openai(base_url: str, model: str = "mock-chat", **fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": model, "base_url": base_url, "timeout_s": 5, **fields}


def routes(**aliases: list[dict[str, Any]]) -> Routes:
    return Routes.model_validate({"default": next(iter(aliases)), "aliases": aliases})


@pytest.fixture(params=["in_process", "remote"])
async def serve_routes(request: pytest.FixtureRequest) -> AsyncIterator[Serve]:
    """A router with the given routes: in this process, or served by the real servicer on a
    gRPC server on 127.0.0.1."""
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []
    routers: list[Router] = []

    async def _serve(r: Routes) -> Inference:
        router = Router({"openai": OpenAIProvider()})
        router.load(Loadout(r, load_counters(r, ROOT / "models")))
        routers.append(router)
        if request.param == "in_process":
            return InProcess(router)
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(router), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        ch = channel(f"127.0.0.1:{port}")
        channels.append(ch)
        stub = inference_pb2_grpc.InferenceStub(ch)
        return Remote(lambda: stub)

    yield _serve
    for ch in channels:
        await ch.close()
    for server in servers:
        await server.stop(None)
    for router in routers:
        await router.close()


async def generate(inference: Inference, **fields: Any) -> tuple[list[str], inference_pb2.Final]:
    fields.setdefault("messages", MESSAGES)
    fields.setdefault("prompt", "What is E-417?")
    request = inference_pb2.GenerateRequest(**fields)
    *deltas, final = [r async for r in inference.generate(request, timeout_s=30)]
    assert final.WhichOneof("event") == "final"
    return [d.delta.text for d in deltas], final.final


async def test_retries_with_exponential_backoff_before_the_next_target(
    serve_routes: Serve,
) -> None:
    async with serve(PIECES, fail_first=2) as flaky, serve(["fallback"]) as spare:
        stub = await serve_routes(
            routes(
                chat=[
                    openai(flaky.base_url, retries=2, backoff_s=0.2),
                    openai(spare.base_url, model="spare"),
                ]
            )
        )
        started = time.monotonic()
        pieces, final = await generate(stub)
        elapsed = time.monotonic() - started
    assert "".join(pieces) == ANSWER and final.output_pieces == len(PIECES)
    assert final.model_used == "openai/mock-chat"
    assert list(final.failed_targets) == []
    assert len(flaky.requests) == 3 and spare.requests == []
    assert elapsed >= 0.2 + 0.4  # waited backoff_s, then twice that


async def test_a_target_out_of_retries_is_listed_in_failed_targets(serve_routes: Serve) -> None:
    async with serve(PIECES, mode="error") as down, serve(["fallback"]) as spare:
        stub = await serve_routes(
            routes(
                chat=[
                    openai(down.base_url, retries=1, backoff_s=0.05),
                    openai(spare.base_url, model="spare"),
                ]
            )
        )
        pieces, final = await generate(stub)
    assert pieces == ["fallback"]
    assert final.model_used == "openai/spare"
    [failed] = final.failed_targets
    assert failed.startswith("openai/mock-chat: ")
    assert "HTTP 500: the model is overloaded (after 2 attempts)" in failed
    assert len(down.requests) == 2


async def test_the_circuit_opens_skips_at_once_then_a_probe_closes_it(
    serve_routes: Serve,
) -> None:
    async with serve(PIECES, mode="error") as primary, serve(["fallback"]) as spare:
        stub = await serve_routes(
            routes(
                chat=[
                    openai(primary.base_url, circuit={"failures": 2, "cooldown_s": 0.5}),
                    openai(spare.base_url, model="spare"),
                ]
            )
        )
        for _ in range(2):  # two failures in a row open it
            _, final = await generate(stub)
            assert "HTTP 500" in final.failed_targets[0]
        assert len(primary.requests) == 2
        _, final = await generate(stub)  # open: skipped without a request
        assert final.model_used == "openai/spare"
        assert final.failed_targets[0].startswith(
            "openai/mock-chat: circuit open after 2 consecutive failures"
        )
        assert len(primary.requests) == 2
        await asyncio.sleep(0.5)
        primary.mode = "ok"  # recovered: the half-open probe succeeds and closes it
        pieces, final = await generate(stub)
        assert ("".join(pieces), final.model_used, list(final.failed_targets)) == (
            ANSWER,
            "openai/mock-chat",
            [],
        )
        pieces, final = await generate(stub)
        assert final.model_used == "openai/mock-chat"
        assert len(primary.requests) == 4


async def test_no_target_left_is_unavailable_naming_each_error(serve_routes: Serve) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with serve(PIECES, mode="error") as down:
        stub = await serve_routes(
            routes(chat=[openai(dead, model="dead"), openai(down.base_url, model="down")])
        )
        with pytest.raises(RouteError) as raised:
            await generate(stub)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    details = raised.value.details
    assert "no target of model alias 'chat' answered" in details
    assert "openai/dead: " in details and "ConnectError" in details
    assert "openai/down: " in details and "HTTP 500" in details


async def test_usage_reported_by_the_upstream_else_counted_by_the_tokenizer_else_zero(
    serve_routes: Serve,
) -> None:
    counter = TokenCounter.load(ROOT / "models" / MINILM)
    async with (
        serve(PIECES, usage={"prompt_tokens": 40, "completion_tokens": 3}) as reports,
        serve(PIECES) as silent,
    ):
        stub = await serve_routes(
            routes(
                reported=[openai(reports.base_url, tokenizer=MINILM)],
                counted=[openai(silent.base_url, tokenizer=MINILM)],
                unknown=[openai(silent.base_url)],
            )
        )
        _, final = await generate(stub, model="reported")
        assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 3)
        _, final = await generate(stub, model="counted")
        assert final.usage.input_tokens == counter.count([m.content for m in MESSAGES])
        assert final.usage.output_tokens == counter.count(["".join(PIECES)])
        assert final.usage.input_tokens > 10 and final.usage.output_tokens > 2
        _, final = await generate(stub, model="unknown")
        assert (final.usage.input_tokens, final.usage.output_tokens) == (0, 0)


async def test_list_models_gives_the_default_first_and_each_alias_targets(
    serve_routes: Serve,
) -> None:
    base = "http://127.0.0.1:1/v1"
    r = Routes.model_validate(
        {
            "default": "chat",
            "aliases": {
                "answerer": [{"provider": "triton", "model": "extractive_answerer"}],
                "chat": [openai(base, model="a"), openai(base, model="b")],
            },
        }
    )
    stub = await serve_routes(r)
    listed = await stub.list_models(timeout_s=5)
    assert listed.default == "chat"
    assert [(a.name, list(a.targets)) for a in listed.aliases] == [
        ("chat", ["openai/a", "openai/b"]),
        ("answerer", ["triton/extractive_answerer"]),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": " ", "messages": []}, "prompt is empty"),
        ({"params": inference_pb2.GenerationParams(max_tokens=-1)}, "max_tokens"),
        ({"params": inference_pb2.GenerationParams(temperature=-0.5)}, "temperature"),
        ({"params": inference_pb2.GenerationParams(top_p=1.5)}, "top_p"),
    ],
)
async def test_invalid_requests(serve_routes: Serve, fields: dict[str, Any], message: str) -> None:
    stub = await serve_routes(routes(chat=[openai("http://127.0.0.1:1/v1")]))
    with pytest.raises(RouteError) as raised:
        await generate(stub, **fields)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert message in raised.value.details


async def test_messages_alone_are_a_valid_request(serve_routes: Serve) -> None:
    mock: OpenAIMock
    async with serve(PIECES) as mock:
        stub = await serve_routes(routes(chat=[openai(mock.base_url)]))
        pieces, _ = await generate(stub, prompt="")
    assert "".join(pieces) == ANSWER


async def test_a_client_that_cancels_closes_the_upstream_and_frees_a_probe(
    serve_routes: Serve,
) -> None:
    async with serve(PIECES, mode="endless") as mock:
        stub = await serve_routes(routes(chat=[openai(mock.base_url)]))
        request = inference_pb2.GenerateRequest(messages=MESSAGES)
        call = stub.generate(request, timeout_s=30)
        first = await anext(call)
        assert first.WhichOneof("event") == "delta"
        await call.aclose()
        await asyncio.wait_for(mock.client_left.wait(), 5)
        # No verdict on the target: it was not counted as a failure, the next call goes to it.
        mock.mode = "ok"
        pieces, final = await generate(stub)
    assert "".join(pieces) == ANSWER and list(final.failed_targets) == []


async def test_a_slow_reader_gets_the_pieces_that_piled_up_as_one_delta() -> None:
    """Pieces the provider produced while the reader was still busy with the previous
    message go out joined in one Delta; Final.output_pieces still counts the pieces."""
    many = [f"w{i} " for i in range(20)]
    async with serve(many, gap_s=0.005) as mock:
        router = Router({"openai": OpenAIProvider()})
        router.load(Loadout(routes(chat=[openai(mock.base_url)]), {}))
        responses = router.generate(inference_pb2.GenerateRequest(messages=MESSAGES))
        first = await anext(responses)
        await asyncio.sleep(0.5)  # a slow reader: the upstream is done meanwhile
        rest = [r async for r in responses]
        await router.close()
    *deltas, final = [first, *rest]
    assert all(d.WhichOneof("event") == "delta" for d in deltas)
    assert "".join(d.delta.text for d in deltas) == "".join(many)
    assert len(deltas) < len(many)
    assert len(deltas) <= 3  # the first piece alone, then all that piled up (in one or two)
    assert final.final.output_pieces == len(many)
    assert final.final.time_to_first_token_ms > 0


async def test_a_fast_reader_gets_each_piece_alone_as_soon_as_it_exists(
    serve_routes: Serve,
) -> None:
    async with serve(PIECES, gap_s=0.2) as mock:
        stub = await serve_routes(routes(chat=[openai(mock.base_url)]))
        call = stub.generate(inference_pb2.GenerateRequest(messages=MESSAGES), timeout_s=30)
        started = time.monotonic()
        first = await anext(call)
        first_s = time.monotonic() - started
        rest = [response async for response in call]
    assert first.delta.text == PIECES[0]
    assert first_s < 0.15  # not held back for the next piece
    pieces = [r.delta.text for r in rest if r.WhichOneof("event") == "delta"]
    assert pieces == PIECES[1:]
    assert rest[-1].final.output_pieces == len(PIECES)


async def test_callers_that_cancel_right_after_the_final_leave_the_upstream_pool_usable(
    serve_routes: Serve,
) -> None:
    """As the gateway does: read up to the Final, then close the stream. Many times over,
    concurrently: the upstream connections are reused, none leaks, requests still pass."""
    async with serve(PIECES, keep_alive=True) as mock:
        stub = await serve_routes(routes(chat=[openai(mock.base_url)]))

        async def cancelled_after_final() -> None:
            call = stub.generate(inference_pb2.GenerateRequest(messages=MESSAGES), timeout_s=30)
            async for response in call:
                if response.WhichOneof("event") == "final":
                    await call.aclose()
                    return

        concurrency = 32
        for _ in range(8):  # 256 calls, more than the pool of the original client held
            await asyncio.gather(*(cancelled_after_final() for _ in range(concurrency)))
        pieces, final = await generate(stub)
        assert "".join(pieces) == ANSWER and final.model_used == "openai/mock-chat"
        assert len(mock.requests) == 8 * concurrency + 1
        assert mock.accepted <= 2 * concurrency  # reused, not one per call
        assert mock.open_connections <= mock.accepted


async def test_the_callers_deadline_ends_an_answer_that_runs_past_it(serve_routes: Serve) -> None:
    """`timeout_s` bounds the whole answer in both forms, not only each piece (the target's
    timeout_s): a stream that never ends is cut at the caller's deadline."""
    async with serve(PIECES, mode="endless") as mock:
        stub = await serve_routes(routes(chat=[openai(mock.base_url)]))
        request = inference_pb2.GenerateRequest(messages=MESSAGES)
        started = time.monotonic()
        with pytest.raises(RouteError) as raised:
            async for _ in stub.generate(request, timeout_s=0.5):
                pass
        elapsed = time.monotonic() - started
        await asyncio.wait_for(mock.client_left.wait(), 5)  # and the upstream was let go
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.5 <= elapsed < 3


@pytest.mark.parametrize(
    ("mode", "here"),
    [(Mode.AUTO, ["chat", "hosted"]), (Mode.LOCAL, ["answerer", "chat", "hosted"])],
)
async def test_split_keeps_hosted_aliases_in_process_and_sends_the_rest_to_the_service(
    mode: Mode, here: list[str]
) -> None:
    """LLMOPS_ROUTING=auto: an alias whose targets are all hosted runs in-process, one with a
    Triton target goes to the service (here: nothing listens, so it is UNAVAILABLE there)."""
    async with serve(PIECES) as mock:
        r = Routes.model_validate(
            {
                "default": "chat",
                "aliases": {
                    "chat": [openai(mock.base_url)],
                    "hosted": [openai(mock.base_url, model="b"), openai(mock.base_url)],
                    "answerer": [{"provider": "triton", "model": "extractive_answerer"}],
                },
            }
        )
        router = Router({"openai": OpenAIProvider()})
        router.load(Loadout(r, {}))
        ch = channel(f"127.0.0.1:{free_port()}")
        split = Split(mode, InProcess(router), Remote(lambda: inference_pb2_grpc.InferenceStub(ch)))
        assert sorted(split.local_aliases) == here
        pieces, final = await generate(split)  # the default alias, in-process
        assert "".join(pieces) == ANSWER and final.model_used == "openai/mock-chat"
        if mode is Mode.AUTO:
            with pytest.raises(RouteError) as raised:
                await generate(split, model="answerer")
            assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        listed = await split.list_models(timeout_s=5)  # from the routes file, no call
        assert [a.name for a in listed.aliases] == ["chat", "answerer", "hosted"]
        await ch.close()
        await router.close()
    assert len(mock.requests) == 1
