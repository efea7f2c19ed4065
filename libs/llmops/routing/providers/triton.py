"""Stream from a decoupled Triton model over gRPC (tritonclient.grpc.aio `stream_infer`).

Two model contracts, told apart by the model's metadata (its input names,
asked once per address and model, then cached):

- the extractive answerer's (deploy/triton/models/extractive_answerer):
  inputs QUESTION [1] and PASSAGES [-1] strings, optional MAX_SENTENCES [1]
  int32; one response per piece in TEXT, then a final response (the
  `triton_final_response` parameter) with CITATIONS. It reports no usage: the
  router counts it with the target's `tokenizer`.
- a causal LM's (deploy/triton/models/causal_lm): PROMPT [-1] (the
  conversation's contents: `messages`, else a system rule and the numbered
  passages with the question, see llmops.routing.prompting) with ROLES [-1],
  rendered by the model's chat template; MAX_TOKENS, TEMPERATURE, TOP_P,
  SEED, STOP from `params` when set; one response per decoded piece in TEXT,
  then a final response with INPUT_TOKENS and OUTPUT_TOKENS (its usage).

Every read has a deadline of the target's `timeout_s`, so a Triton that
accepts the connection but never answers (stopped, overloaded) fails the
target instead of hanging the call. A model that is not loaded (failed to
load, unloaded, not deployed) fails the target with a message saying so.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from llmops.grpcutil import MAX_MESSAGE_BYTES
from llmops.routing.errors import TargetError
from llmops.routing.prompting import conversation, question
from llmops.routing.providers import Done, Event, Text, Usage
from llmops.routing.routes import Target
from llmops.v1 import inference_pb2

_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Triton is in the cluster / on 127.0.0.1: never route through an HTTP proxy.
    ("grpc.enable_http_proxy", 0),
]
_FINAL = "triton_final_response"  # the response parameter that marks a stream's last
_LENGTH = struct.Struct("<I")  # the length before each element of a BYTES tensor
ANSWERER = "answerer"
CAUSAL_LM = "causal_lm"


class TritonProvider:
    def __init__(self, default_address: str) -> None:
        self._default_address = default_address
        self._clients: dict[str, triton_aio.InferenceServerClient] = {}
        self._contracts: dict[tuple[str, str], str] = {}

    def _client(self, address: str) -> triton_aio.InferenceServerClient:
        # One channel per address for the process, made lazily inside the running loop.
        if address not in self._clients:
            self._clients[address] = triton_aio.InferenceServerClient(
                address, channel_args=_CHANNEL_ARGS
            )
        return self._clients[address]

    async def _contract(self, target: Target, address: str) -> str:
        """Which contract the model speaks, from its input names (cached once known)."""
        key = (address, target.model)
        if key in self._contracts:
            return self._contracts[key]
        try:
            metadata = await asyncio.wait_for(
                self._client(address).get_model_metadata(target.model, as_json=True),
                target.timeout_s,
            )
        except TimeoutError:
            raise TargetError(
                f"no response from Triton at {address} within {target.timeout_s:g}s"
            ) from None
        except InferenceServerException as exc:
            if "UNAVAILABLE" in str(exc.status()) or "DEADLINE" in str(exc.status()):
                raise TargetError(f"Triton at {address}: {exc.message()}") from None
            raise TargetError(
                f"model {target.model!r} is not loaded in Triton at {address} "
                f"(see Triton's log for why): {exc.message()}"
            ) from None
        names = {i["name"] for i in metadata.get("inputs", [])}
        if "PROMPT" in names:
            contract = CAUSAL_LM
        elif {"QUESTION", "PASSAGES"} <= names:
            contract = ANSWERER
        else:
            raise TargetError(
                f"Triton model {target.model!r} has inputs {sorted(names)}: neither the "
                "causal LM's (PROMPT, ...) nor the answerer's (QUESTION, PASSAGES)"
            )
        self._contracts[key] = contract
        return contract

    async def generate(
        self, target: Target, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[Event, None]:
        address = target.address or self._default_address
        contract = await self._contract(target, address)
        inputs = _lm_inputs(request) if contract == CAUSAL_LM else _answerer_inputs(request)

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": target.model, "inputs": inputs, "request_id": request.request_id}

        responses = self._client(address).stream_infer(requests())
        deadline = _ReadDeadline(target.timeout_s)
        try:
            while True:
                result = await _next(responses, deadline, target, address)
                # Once per piece: read TEXT and the final flag off the protobuf itself
                # (InferResult.as_numpy builds numpy arrays, several times the cost).
                response = result.get_response()
                for text in _texts(result, response):
                    yield Text(text)
                final = response.parameters.get(_FINAL)
                if final is not None and final.bool_param:
                    citations = result.as_numpy("CITATIONS")
                    cited = () if citations is None else tuple(int(c) for c in citations)
                    yield Done(cited, _usage(result))
                    return
        finally:
            deadline.close()
            responses.cancel()  # the caller went away, or the answer is complete

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()


async def _next(responses: Any, deadline: _ReadDeadline, target: Target, address: str) -> Any:
    """The next response of the stream, or TargetError saying why there is none."""
    try:
        result, error = await deadline.read(responses)
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


class _ReadDeadline:
    """Fails a read of the stream that waits `timeout_s` or more (TimeoutError).

    This runs once per piece, so instead of a timer per read (asyncio.timeout,
    or wait_for's task) one timer per stream is armed and, when it fires early,
    re-armed for the read then in progress; a read only notes when it began.
    """

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._reading: tuple[asyncio.Task[Any], float] | None = None  # the reader, since
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    async def read(self, responses: AsyncIterator[Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        began = self._loop.time()
        self._reading = (task, began)
        if self._timer is None:
            self._timer = self._loop.call_at(began + self._timeout_s, self._check)
        try:
            return await anext(responses)
        except asyncio.CancelledError:
            if self._expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._reading = None

    def _check(self) -> None:
        now = self._loop.time()
        if self._reading is None:  # between reads: no read can expire before a full timeout
            self._timer = self._loop.call_at(now + self._timeout_s, self._check)
            return
        task, began = self._reading
        if now < began + self._timeout_s:
            self._timer = self._loop.call_at(began + self._timeout_s, self._check)
            return
        self._timer = None
        self._expired = True
        task.cancel()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _usage(result: Any) -> Usage | None:
    """INPUT_TOKENS/OUTPUT_TOKENS of a final response; None when the model sends none."""
    inputs = result.as_numpy("INPUT_TOKENS")
    outputs = result.as_numpy("OUTPUT_TOKENS")
    if inputs is None or outputs is None:
        return None
    return Usage(int(inputs.reshape(-1)[0]), int(outputs.reshape(-1)[0]))


def _strings(name: str, values: list[str]) -> InferInput:
    tensor = InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=np.object_))
    return tensor


def _scalar(name: str, datatype: str, value: float | int, dtype: Any) -> InferInput:
    tensor = InferInput(name, [1], datatype)
    tensor.set_data_from_numpy(np.array([value], dtype=dtype))
    return tensor


def _answerer_inputs(request: inference_pb2.GenerateRequest) -> list[InferInput]:
    inputs = [_strings("QUESTION", [question(request)]), _strings("PASSAGES", [*request.context])]
    if request.max_sentences > 0:
        inputs.append(_scalar("MAX_SENTENCES", "INT32", request.max_sentences, np.int32))
    return inputs


def _lm_inputs(request: inference_pb2.GenerateRequest) -> list[InferInput]:
    messages = conversation(request)
    inputs = [
        _strings("PROMPT", [content for _, content in messages]),
        _strings("ROLES", [role for role, _ in messages]),
    ]
    params = request.params
    if params.max_tokens > 0:
        inputs.append(_scalar("MAX_TOKENS", "INT32", params.max_tokens, np.int32))
    if params.HasField("temperature"):
        inputs.append(_scalar("TEMPERATURE", "FP32", params.temperature, np.float32))
    if params.HasField("top_p"):
        inputs.append(_scalar("TOP_P", "FP32", params.top_p, np.float32))
    if params.HasField("seed"):
        inputs.append(_scalar("SEED", "INT64", params.seed, np.int64))
    if params.stop:
        inputs.append(_strings("STOP", [*params.stop]))
    return inputs


def _texts(result: Any, response: Any) -> list[str]:
    """The TEXT elements of a response (ModelInferResponse), decoded; [] when it has none.

    A BYTES tensor's raw content is each element as a 4-byte little-endian length
    and its bytes; a response without raw contents goes through tritonclient.
    """
    for index, output in enumerate(response.outputs):
        if output.name != "TEXT":
            continue
        if index >= len(response.raw_output_contents) or output.datatype != "BYTES":
            text = result.as_numpy("TEXT")
            return [] if text is None else [_decode(value) for value in text.reshape(-1)]
        raw = response.raw_output_contents[index]
        texts, offset = [], 0
        while offset < len(raw):
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += _LENGTH.size
            texts.append(raw[offset : offset + length].decode("utf-8", errors="replace"))
            offset += length
        return texts
    return []


def _decode(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
