"""How the gateway picks a registry prompt for a request and turns it into a conversation.

The registry (llmops.prompts) holds the versions and labels; the gateway reads its
in-memory mirror, so choosing a prompt costs no round trip. Registry errors become
gRPC statuses here: an unknown prompt, version or label is NOT_FOUND, a bad version
or missing variables INVALID_ARGUMENT (raised before any cache, search or model work).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from gateway.errors import GatewayError
from llmops.prompts.mirror import PromptMirror, Resolved
from llmops.prompts.model import PromptError, PromptNotFound, PromptVersion
from llmops.v1 import gateway_pb2, inference_pb2


@dataclass(frozen=True)
class Passage:
    number: int  # 1-based, as the prompt shows it
    text: str


def _version_number(text: str) -> int | None:
    """ "3" or "v3" → 3; "" → None (the label decides)."""
    if not text:
        return None
    digits = text.removeprefix("v")
    if not digits.isdigit() or int(digits) < 1:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"prompt_version must be a version number like 3 or v3, not {text!r}",
        )
    return int(digits)


def choose_prompt(
    mirror: PromptMirror, tenant: str, request: gateway_pb2.ChatRequest, request_id: str
) -> Resolved:
    """The version this request gets (its variables checked), or the GatewayError why none."""
    try:
        resolved = mirror.resolve(
            tenant,
            request.prompt,
            version=_version_number(request.prompt_version),
            label=request.prompt_label,
            user=request.user,
            request_id=request_id,
        )
        resolved.prompt.check_variables(request.variables)
    except PromptNotFound as exc:
        raise GatewayError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    except PromptError as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
    return resolved


def render(
    template: PromptVersion,
    request: gateway_pb2.ChatRequest,
    history: list[inference_pb2.ChatMessage],
    question: str,
    passages: list[Passage],
) -> list[inference_pb2.ChatMessage]:
    """The conversation a generative model gets: system, earlier turns, the rendered user."""
    context = "\n\n".join(f"[{p.number}] {p.text}" for p in passages) or "(no passages)"
    system, user = template.render(request.variables, question=question, context=context)
    messages = []
    if system:
        messages.append(inference_pb2.ChatMessage(role="system", content=system))
    messages.extend(history)
    messages.append(inference_pb2.ChatMessage(role="user", content=user))
    return messages
