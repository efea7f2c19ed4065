"""The openai provider against a real local server speaking the chat-completions SSE format."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from llmops.routing.errors import TargetError
from llmops.routing.providers import Done, Event, Text, Usage
from llmops.routing.providers.openai import OpenAIProvider, SSEParser, delta_text, sse_data
from llmops.routing.routes import Target
from llmops.v1 import inference_pb2
from tests.inference.openai_mock import OpenAIMock, Received, serve
from tests.support import free_port

PIECES = ["Error ", "code ", "E-417 ", "means low flow [2]."]
REQUEST = inference_pb2.GenerateRequest(
    prompt="What does E-417 mean?",
    context=["Oil the chain.", "E-417 means the flow is low."],
    max_sentences=1,
)


def target(base_url: str, **fields: object) -> Target:
    return Target.model_validate(
        {"provider": "openai", "model": "mock-chat", "base_url": base_url, **fields}
    )


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider(environ={"MOCK_KEY": "sk-test-123"})
    yield p
    await p.close()


async def collect(p: OpenAIProvider, t: Target) -> list[Event]:
    return [event async for event in p.generate(t, REQUEST)]


async def test_streams_the_deltas_in_order_then_done_and_sends_the_key(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES, gap_s=0.01) as mock:
        events = await collect(provider, target(mock.base_url, api_key_env="MOCK_KEY"))
    *texts, done = events
    assert texts == [Text(p) for p in PIECES]  # the role-only and finish chunks yield nothing
    assert "".join(t.text for t in texts if isinstance(t, Text)) == "".join(PIECES)
    assert done == Done(())
    [received] = mock.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer sk-test-123"
    assert received.body["model"] == "mock-chat"
    assert received.body["stream"] is True
    system, user = received.body["messages"]
    assert system["role"] == "system" and "only" in system["content"]
    assert "at most 1 sentences" in system["content"]
    assert user["role"] == "user"
    assert "[1] Oil the chain." in user["content"]
    assert "[2] E-417 means the flow is low." in user["content"]
    assert user["content"].endswith("Question: What does E-417 mean?")


async def test_no_api_key_env_sends_no_authorization(provider: OpenAIProvider) -> None:
    async with serve(PIECES) as mock:
        events = await collect(provider, target(mock.base_url))
    assert events[-1] == Done(())
    assert "authorization" not in mock.requests[0].headers


async def test_an_unset_key_variable_fails_the_target(provider: OpenAIProvider) -> None:
    with pytest.raises(TargetError, match="NOT_SET_KEY is not set"):
        await collect(provider, target("http://127.0.0.1:1/v1", api_key_env="NOT_SET_KEY"))


async def test_an_http_500_fails_before_any_piece_with_the_upstream_message(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES, mode="error") as mock:
        stream = provider.generate(target(mock.base_url), REQUEST)
        with pytest.raises(TargetError, match=r"HTTP 500: the model is overloaded"):
            await anext(stream)


async def test_a_refused_connection_fails_before_any_piece(provider: OpenAIProvider) -> None:
    stream = provider.generate(target(f"http://127.0.0.1:{free_port()}/v1"), REQUEST)
    with pytest.raises(TargetError, match="ConnectError"):
        await anext(stream)


async def test_an_upstream_that_never_sends_a_piece_hits_timeout_s(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES, mode="stall") as mock:
        started = time.monotonic()
        stream = provider.generate(target(mock.base_url, timeout_s=0.5), REQUEST)
        with pytest.raises(TargetError, match=r"no piece from .* within 0.5s"):
            await anext(stream)
    assert 0.4 < time.monotonic() - started < 5


async def test_timeout_s_also_bounds_the_gap_between_pieces(provider: OpenAIProvider) -> None:
    async with serve(PIECES, mode="stall_after_first") as mock:
        events: list[Event] = []
        with pytest.raises(TargetError, match=r"within 0\.5s"):
            async for event in provider.generate(target(mock.base_url, timeout_s=0.5), REQUEST):
                events.append(event)
    assert events == [Text(PIECES[0])]


async def test_a_caller_that_goes_away_closes_the_http_response(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES, mode="endless") as mock:
        async with contextlib.aclosing(provider.generate(target(mock.base_url), REQUEST)) as s:
            assert await anext(s) == Text("more ")
        await asyncio.wait_for(mock.client_left.wait(), 5)
        # The pooled client still answers the next request.
        mock.mode = "ok"
        events = await collect(provider, target(mock.base_url))
    assert events[-1] == Done(())


async def test_an_error_event_inside_the_stream_is_a_target_error() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in ['data: {"error": {"message": "boom"}}', ""]:
            yield line

    [data] = [d async for d in sse_data(lines())]
    with pytest.raises(TargetError, match="boom"):
        delta_text(data)


async def test_sse_parsing_follows_the_format() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": keep-alive", "", "event: x", "data:a", "data: b", "id: 3", "", "data: c"]:
            yield line

    assert [d async for d in sse_data(lines())] == ["a\nb", "c"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"provider": "openai", "model": "m"}, "needs base_url"),
        ({"provider": "openai", "model": "m", "base_url": "ftp://x"}, "base_url"),
        (
            {"provider": "openai", "model": "m", "base_url": "http://x", "api_key_env": "sk-1"},
            "api_key_env",
        ),
        ({"provider": "triton", "model": "m", "base_url": "http://x"}, "only for openai"),
        (
            {"provider": "openai", "model": "m", "base_url": "http://x", "address": "h:1"},
            "address is for triton",
        ),
    ],
)
def test_openai_target_fields_are_validated(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Target.model_validate(fields)


CHAT = inference_pb2.GenerateRequest(
    prompt="What does E-417 mean?",
    context=["ignored: the messages carry the passages"],
    messages=[
        inference_pb2.ChatMessage(role="system", content="You are terse."),
        inference_pb2.ChatMessage(role="user", content="[1] E-417: low flow.\nE-417?"),
        inference_pb2.ChatMessage(role="assistant", content="Low flow [1]."),
        inference_pb2.ChatMessage(role="user", content="And the fix?"),
    ],
    params=inference_pb2.GenerationParams(
        max_tokens=64, temperature=0.0, top_p=0.5, stop=["\n\n", "END"], seed=42
    ),
)


async def test_sends_the_messages_and_params_and_reads_the_reported_usage(
    provider: OpenAIProvider,
) -> None:
    usage = {"prompt_tokens": 31, "completion_tokens": 7}
    async with serve(PIECES, usage=usage) as mock:
        events = [e async for e in provider.generate(target(mock.base_url), CHAT)]
    assert events[-1] == Done((), Usage(31, 7))
    [received] = mock.requests
    body = received.body
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "[1] E-417: low flow.\nE-417?"},
        {"role": "assistant", "content": "Low flow [1]."},
        {"role": "user", "content": "And the fix?"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64
    assert body["temperature"] == 0.0  # set to 0 is sent (greedy), unset is left out
    assert body["top_p"] == 0.5
    assert body["stop"] == ["\n\n", "END"]
    assert body["seed"] == 42


async def test_unset_params_are_left_to_the_upstream_and_no_usage_is_none(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES) as mock:  # an upstream that ignores include_usage
        events = await collect(provider, target(mock.base_url))
    assert events[-1] == Done((), None)
    body = mock.requests[0].body
    assert not {"max_tokens", "temperature", "top_p", "stop", "seed"} & body.keys()


async def test_the_connection_is_kept_alive_and_reused(provider: OpenAIProvider) -> None:
    async with serve(PIECES, keep_alive=True) as mock:
        for _ in range(5):
            events = await collect(provider, target(mock.base_url))
            assert events[-1] == Done(())
        assert (len(mock.requests), mock.accepted) == (5, 1)


async def test_a_cancel_right_after_done_neither_leaks_nor_stalls_the_pool(
    provider: OpenAIProvider,
) -> None:
    """The gateway cancels Generate as soon as it has the Final: the provider's stream is
    then closed with a cancel pending. That must hand the connection back (or close it),
    never leave it checked out of the pool: once the pool had leaked its limit, every
    next request hung."""

    async def cancelled_after_done() -> None:
        stream = provider.generate(target(mock.base_url), REQUEST)
        async for event in stream:
            if isinstance(event, Done):
                break
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the caller goes away while the stream closes
        await stream.aclose()

    async with serve(PIECES, keep_alive=True) as mock:
        for _ in range(300):  # more than the pool holds
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.create_task(cancelled_after_done())
        events = await asyncio.wait_for(collect(provider, target(mock.base_url)), 5)
        assert events[-1] == Done(())
        assert len(mock.requests) == 301
        assert mock.accepted == 1  # one connection, handed back to the pool every time
        await provider.close()
        for _ in range(100):
            if mock.open_connections == 0:
                break
            await asyncio.sleep(0.02)
        assert mock.open_connections == 0  # and closed with the provider


async def test_a_stream_closed_early_closes_its_connection_and_the_pool_goes_on(
    provider: OpenAIProvider,
) -> None:
    async with serve(PIECES, mode="endless", keep_alive=True) as mock:
        for _ in range(3):
            async with contextlib.aclosing(provider.generate(target(mock.base_url), REQUEST)) as s:
                assert await anext(s) == Text("more ")
        for _ in range(100):
            if mock.open_connections == 0:
                break
            await asyncio.sleep(0.02)
        assert (mock.accepted, mock.open_connections) == (3, 0)  # half-read: not reused


def test_sse_parser_gives_the_same_events_however_the_body_is_split() -> None:
    body = (
        b": keep-alive\r\n\r\nevent: x\r\ndata:a\r\ndata: b\r\nid: 3\r\n\r\n"
        b'data: {"t": "\xc3\xa9\xe2\x80\xa8"}\n\ndata: c\r\rdata: d\n\ndata: e'
    )
    expected = ["a\nb", '{"t": "\u00e9\u2028"}', "c", "d", "e"]
    for size in range(1, len(body) + 1):
        parser = SSEParser()
        events = [e for i in range(0, len(body), size) for e in parser.feed(body[i : i + size])]
        assert events + parser.close() == expected, size


async def test_reported_usage_keeps_the_cached_and_reasoning_parts(
    provider: OpenAIProvider,
) -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 256},
    }
    async with serve(PIECES, usage=usage) as mock:
        *_, done = await collect(provider, target(mock.base_url))
    assert done == Done((), Usage(1200, 300, 1024, 256))


class _ResetsSecondRequest(OpenAIMock):
    """Keeps its first connection alive, then drops it, unanswered, when the second request
    arrives on it: what a client sees when the upstream closed an idle pooled connection."""

    async def _respond(self, writer: asyncio.StreamWriter, received: Received) -> bool:
        if len(self.requests) == 2:
            writer.transport.abort()  # a reset, not an answer
            return False
        return await super()._respond(writer, received)


async def test_a_pooled_connection_the_upstream_dropped_is_sent_again_once(
    provider: OpenAIProvider,
) -> None:
    mock = _ResetsSecondRequest(PIECES, keep_alive=True)
    server = await asyncio.start_server(mock._handle, "127.0.0.1", mock.port)
    try:
        for _ in range(2):
            events = await collect(provider, target(mock.base_url))
            assert events[-1] == Done(())
    finally:
        server.close()
        await server.wait_closed()
    assert (len(mock.requests), mock.accepted) == (3, 2)  # the dropped one went out again
