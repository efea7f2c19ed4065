"""Where a route's targets are answered: one provider per `provider:` of the routes file."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from llmops.routing.routes import Target
from llmops.v1 import inference_pb2


@dataclass(frozen=True)
class Text:
    """The next piece of the answer."""

    text: str


@dataclass(frozen=True)
class Usage:
    """Tokens as the answering model's own tokenizer counts them (or the upstream reports)."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # part of input_tokens (an upstream's prompt cache)
    reasoning_tokens: int = 0  # part of output_tokens


@dataclass(frozen=True)
class Done:
    """The end of the answer: the indices of the context passages it cites, and its usage.

    `usage` is None when the target did not report it; the router then counts
    with the target's `tokenizer`, if it has one.
    """

    citations: tuple[int, ...]
    usage: Usage | None = None


Event = Text | Done


class Provider(Protocol):
    def generate(
        self, target: Target, request: inference_pb2.GenerateRequest
    ) -> AsyncGenerator[Event, None]:
        """Stream the answer's pieces, then one Done; raise TargetError if the target fails.

        Closing the iterator early (the caller went away) must stop the upstream work.
        """
        ...

    async def close(self) -> None: ...
