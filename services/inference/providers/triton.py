"""Stream from a decoupled Triton model over gRPC (tritonclient.grpc.aio `stream_infer`).

The model contract is the extractive answerer's (deploy/triton/models/
extractive_answerer/config.pbtxt): inputs QUESTION [1] and PASSAGES [-1]
strings, optional MAX_SENTENCES [1] int32; one response per piece in TEXT,
then a final response (the `triton_final_response` parameter) with CITATIONS.
Every read has a deadline of the target's `timeout_s`, so a Triton that
accepts the connection but never answers (stopped, overloaded) fails the
target instead of hanging the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput

from inference.errors import TargetError
from inference.providers import Done, Event, Text
from inference.routing import Target
from llmops.grpcutil import MAX_MESSAGE_BYTES
from llmops.v1 import inference_pb2

_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Triton is in the cluster / on 127.0.0.1: never route through an HTTP proxy.
    ("grpc.enable_http_proxy", 0),
]


class TritonProvider:
    def __init__(self, default_address: str) -> None:
        self._default_address = default_address
        self._clients: dict[str, triton_aio.InferenceServerClient] = {}

    def _client(self, address: str) -> triton_aio.InferenceServerClient:
        # One channel per address for the process, made lazily inside the running loop.
        if address not in self._clients:
            self._clients[address] = triton_aio.InferenceServerClient(
                address, channel_args=_CHANNEL_ARGS
            )
        return self._clients[address]

    async def generate(
        self, target: Target, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[Event, None]:
        address = target.address or self._default_address
        inputs = _inputs(request)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": target.model, "inputs": inputs, "request_id": request.request_id}

        responses = self._client(address).stream_infer(requests())
        try:
            while True:
                result = await _next(responses, target, address)
                text = result.as_numpy("TEXT")
                if text is not None:
                    for value in text.reshape(-1):
                        yield Text(_decode(value))
                if result.get_response().parameters["triton_final_response"].bool_param:
                    citations = result.as_numpy("CITATIONS")
                    cited = () if citations is None else tuple(int(c) for c in citations)
                    yield Done(cited)
                    return
        finally:
            responses.cancel()  # the caller went away, or the answer is complete

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


async def _next(responses: Any, target: Target, address: str) -> Any:
    """The next response of the stream, or TargetError saying why there is none."""
    try:
        result, error = await asyncio.wait_for(anext(responses), target.timeout_s)
    except TimeoutError:
        raise TargetError(
            f"no response from Triton at {address} within {target.timeout_s:g}s"
        ) from None
    except StopAsyncIteration:
        raise TargetError("Triton ended the stream before the final response") from None
    except grpc.aio.AioRpcError as exc:
        raise TargetError(f"Triton at {address}: {exc.code().name}: {exc.details()}") from None
    if error is not None:
        raise TargetError(f"Triton: {error.message()}")
    return result


def _inputs(request: inference_pb2.GenerateRequest) -> list[InferInput]:
    question = InferInput("QUESTION", [1], "BYTES")
    question.set_data_from_numpy(np.array([request.prompt.encode()], dtype=np.object_))
    passages = InferInput("PASSAGES", [len(request.context)], "BYTES")
    passages.set_data_from_numpy(np.array([p.encode() for p in request.context], dtype=np.object_))
    inputs = [question, passages]
    if request.max_sentences > 0:
        limit = InferInput("MAX_SENTENCES", [1], "INT32")
        limit.set_data_from_numpy(np.array([request.max_sentences], dtype=np.int32))
        inputs.append(limit)
    return inputs


def _decode(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
