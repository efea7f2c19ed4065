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
  passages with the question, see inference.prompting) with ROLES [-1],
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
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from inference.errors import TargetError
from inference.prompting import conversation, question
from inference.providers import Done, Event, Text, Usage
from inference.routing import Target
from llmops.grpcutil import MAX_MESSAGE_BYTES
from llmops.v1 import inference_pb2

_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Triton is in the cluster / on 127.0.0.1: never route through an HTTP proxy.
    ("grpc.enable_http_proxy", 0),
]
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
                    yield Done(cited, _usage(result))
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


def _decode(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
