"""The providers a router answers with, one per `provider:` value of the routes file."""

from __future__ import annotations

from llmops.routing.providers import Provider
from llmops.routing.providers.openai import OpenAIProvider
from llmops.routing.providers.triton import TritonProvider


def default_providers(triton_grpc_addr: str) -> dict[str, Provider]:
    """Each connects lazily, per request: an upstream down at start-up is not an error."""
    return {"triton": TritonProvider(triton_grpc_addr), "openai": OpenAIProvider()}
