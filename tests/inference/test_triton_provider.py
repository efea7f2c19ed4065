"""The Triton provider's per-piece helpers: reading TEXT off the protobuf, the read deadline."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from tritonclient.grpc import service_pb2
from tritonclient.grpc._infer_result import InferResult

from llmops.routing.providers.triton import _ReadDeadline, _texts


def _response(*outputs: tuple[str, str, list[bytes]]) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse()
    for name, datatype, values in outputs:
        output = response.outputs.add(name=name, datatype=datatype, shape=[len(values)])
        assert output.name == name
        response.raw_output_contents.append(b"".join(struct.pack("<I", len(v)) + v for v in values))
    return response


def test_texts_reads_each_element_of_the_text_tensor() -> None:
    response = _response(
        ("CITATIONS", "INT32", [b"\x01\x00\x00\x00"]),
        ("TEXT", "BYTES", ["héllo ".encode(), b"", b"world"]),
    )
    assert _texts(InferResult(response), response) == ["héllo ", "", "world"]


def test_texts_of_a_response_without_text_is_empty() -> None:
    response = _response(("CITATIONS", "INT32", [b"\x01\x00\x00\x00"]))
    assert _texts(InferResult(response), response) == []


def test_texts_agrees_with_tritonclient_on_invalid_utf8() -> None:
    response = _response(("TEXT", "BYTES", [b"caf\xc3"]))
    assert _texts(InferResult(response), response) == ["caf\ufffd"]


async def _pieces(gaps_s: list[float]) -> AsyncIterator[int]:
    for i, gap in enumerate(gaps_s):
        await asyncio.sleep(gap)
        yield i


async def test_deadline_fails_one_slow_read() -> None:
    deadline = _ReadDeadline(0.05)
    pieces = _pieces([0.0, 0.2])
    try:
        assert await deadline.read(pieces) == 0
        with pytest.raises(TimeoutError):
            await deadline.read(pieces)
    finally:
        deadline.close()


async def test_deadline_counts_each_read_alone_and_not_the_time_between() -> None:
    deadline = _ReadDeadline(0.05)
    pieces = _pieces([0.03] * 6)
    try:
        for i in range(6):  # 0.18 s in all, each read under the timeout
            assert await deadline.read(pieces) == i
            await asyncio.sleep(0.06)  # the consumer is slow: not the stream's fault
    finally:
        deadline.close()


async def test_deadline_lets_an_outside_cancel_through() -> None:
    deadline = _ReadDeadline(10.0)

    async def read() -> int:
        value: int = await deadline.read(_pieces([1.0]))
        return value

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()
