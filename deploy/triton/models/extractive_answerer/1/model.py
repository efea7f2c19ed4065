"""Triton python model `extractive_answerer`: answerer.py's quotes, streamed like LLM tokens.

Decoupled: each request gets one response per piece of the answer (a word and
its following space) in TEXT, then a final response with CITATIONS and the
COMPLETE_FINAL flag, so clients exercise the same token-streaming path as with
a generative model. A bad request gets one final error response instead.
"""

from __future__ import annotations

import numpy as np
import triton_python_backend_utils as pb_utils
from answerer import answer, stream_pieces  # the version folder is on sys.path


class TritonPythonModel:
    """The class name and `execute` are what the python backend calls."""

    def execute(self, requests: list[pb_utils.InferenceRequest]) -> None:
        """Answer each request on its own response sender; decoupled models return None."""
        for request in requests:
            sender = request.get_response_sender()
            try:
                pieces, citations = _answer(request)
            except ValueError as error:
                response = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            for piece in pieces:
                text = pb_utils.Tensor("TEXT", np.array([piece.encode()], dtype=np.object_))
                sender.send(pb_utils.InferenceResponse(output_tensors=[text]))
            cited = pb_utils.Tensor("CITATIONS", np.array(citations, dtype=np.int32))
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[cited]),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )


def _answer(request: pb_utils.InferenceRequest) -> tuple[list[str], tuple[int, ...]]:
    """The request's answer as streaming pieces, and its citations; ValueError if invalid."""
    question = _strings(request, "QUESTION")
    passages = _strings(request, "PASSAGES")
    limit = pb_utils.get_input_tensor_by_name(request, "MAX_SENTENCES")  # optional
    if limit is None:
        result = answer(" ".join(question), passages)
    else:
        result = answer(" ".join(question), passages, int(limit.as_numpy()[0]))
    return stream_pieces(result.text), result.citations


def _strings(request: pb_utils.InferenceRequest, name: str) -> list[str]:
    """A TYPE_STRING input as text (Triton hands over bytes)."""
    values = pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)
    return [value.decode("utf-8", errors="replace") for value in values]
