"""Token counts by a target's own tokenizer, for targets that report no usage.

A target's `tokenizer:` (routes file) is a `tokenizer.json` in the Hugging
Face `tokenizers` format, or a folder holding one; relative paths are under
LLMOPS_MODELS_DIR. It is loaded once, when the routes are loaded (a missing
or broken file stops start-up). Counts never include special tokens
([CLS], <s>, ...), and are never truncated.

What is counted: input, the texts the target was given — for a generative
target the conversation's message contents, for the extractive answerer the
question and every context passage; output, the answer's pieces joined.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from llmops.routing.errors import RoutesFileError
from llmops.routing.prompting import conversation, question
from llmops.routing.routes import Routes, Target
from llmops.v1 import inference_pb2

TOKENIZER_FILE = "tokenizer.json"


_CACHED_TEXTS = 4096


class TokenCounter:
    """Counts per text, remembered: retrieved passages recur across requests."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self._count_one = functools.lru_cache(maxsize=_CACHED_TEXTS)(self._tokens_in)

    def _tokens_in(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @classmethod
    def load(cls, path: Path) -> TokenCounter:
        file = path / TOKENIZER_FILE if path.is_dir() else path
        return cls(Tokenizer.from_file(str(file)))

    def count(self, texts: Iterable[str]) -> int:
        return sum(self._count_one(text) for text in texts if text)


def load_counters(routes: Routes, models_dir: Path) -> dict[str, TokenCounter]:
    """Every target's tokenizer, by its `tokenizer:` value; RoutesFileError if one fails."""
    counters: dict[str, TokenCounter] = {}
    for targets in routes.aliases.values():
        for target in targets:
            if target.tokenizer is None or target.tokenizer in counters:
                continue
            path = Path(target.tokenizer)
            if not path.is_absolute():
                path = models_dir / path
            try:
                counters[target.tokenizer] = TokenCounter.load(path)
            except Exception as exc:
                raise RoutesFileError(
                    f"target {target.name}: cannot load the tokenizer {target.tokenizer!r} "
                    f"({path}): {exc}"
                ) from exc
    return counters


def input_texts(target: Target, request: inference_pb2.GenerateRequest) -> list[str]:
    """What the target was given to read."""
    if target.provider == "openai":  # the conversation it was sent
        return [content for _, content in conversation(request)]
    return [question(request), *request.context]  # the extractive answerer's inputs
