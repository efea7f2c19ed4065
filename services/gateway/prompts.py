"""Prompt templates by name and version, from one YAML file validated at start-up.

Placeholders are replaced literally (`{context}`, `{question}`), not with
str.format: user text full of braces must not break or inject into a template.
This is the seam the prompt registry will fill: same lookup, other source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.v1 import inference_pb2

DEFAULT_PROMPT = "default"


class PromptsFileError(Exception):
    """The prompts file is missing, not YAML, or does not match the schema."""


class PromptVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    system: str = ""
    user: str = Field(min_length=1)

    @field_validator("user")
    @classmethod
    def _needs_question(cls, user: str) -> str:
        if "{question}" not in user:
            raise ValueError("the user template must contain {question}")
        return user


class PromptsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: dict[str, list[PromptVersion]]


@dataclass(frozen=True)
class Passage:
    number: int  # 1-based, as the prompt shows it
    text: str


class Prompts:
    def __init__(self, templates: dict[str, list[PromptVersion]]) -> None:
        self._templates = templates

    def resolve(self, name: str, version: str) -> tuple[str, PromptVersion] | str:
        """The template, or why there is none (an error message for NOT_FOUND)."""
        name = name or DEFAULT_PROMPT
        versions = self._templates.get(name)
        if not versions:
            return f"unknown prompt {name!r}; known prompts: {', '.join(sorted(self._templates))}"
        if not version:
            return name, versions[-1]
        for candidate in versions:
            if candidate.version == version:
                return name, candidate
        known = ", ".join(v.version for v in versions)
        return f"prompt {name!r} has no version {version!r}; versions: {known}"

    @staticmethod
    def render(
        template: PromptVersion,
        history: list[inference_pb2.ChatMessage],
        question: str,
        passages: list[Passage],
    ) -> list[inference_pb2.ChatMessage]:
        """The conversation a generative model gets: system, earlier turns, the rendered user."""
        context = "\n\n".join(f"[{p.number}] {p.text}" for p in passages) or "(no passages)"
        user = template.user.replace("{context}", context).replace("{question}", question)
        messages = []
        if template.system:
            messages.append(inference_pb2.ChatMessage(role="system", content=template.system))
        messages.extend(history)
        messages.append(inference_pb2.ChatMessage(role="user", content=user))
        return messages


def load_prompts(path: Path) -> Prompts:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PromptsFileError(f"cannot read the prompts file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PromptsFileError(f"the prompts file {path} is not valid YAML: {exc}") from exc
    try:
        parsed = PromptsFile.model_validate(raw)
    except ValidationError as exc:
        raise PromptsFileError(f"the prompts file {path} is invalid: {exc}") from exc
    if DEFAULT_PROMPT not in parsed.prompts:
        raise PromptsFileError(f"the prompts file {path} has no {DEFAULT_PROMPT!r} prompt")
    return Prompts(parsed.prompts)
