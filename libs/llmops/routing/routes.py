"""The routes file: model aliases, each an ordered list of targets tried in turn.

```yaml
default: answerer
aliases:
  answerer:
    - {provider: triton, model: extractive_answerer, timeout_s: 10}
    - provider: openai          # any OpenAI-compatible chat-completions API
      model: gpt-4o-mini
      base_url: https://api.openai.com/v1
      api_key_env: OPENAI_API_KEY   # the NAME of the variable holding the key
      retries: 1                    # tries again (after backoff_s, doubled each time) first
      circuit: {failures: 5, cooldown_s: 30}
      tokenizer: all-MiniLM-L6-v2/tokenizer.json  # counts tokens if the upstream does not
```

Validated with pydantic when the service starts; a bad file stops start-up
with a message naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmops.routing.errors import RoutesFileError


class Circuit(BaseModel):
    """A target's circuit breaker: open after `failures` failures in a row, for `cooldown_s`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(5, ge=1, description="consecutive failed attempts that open it")
    cooldown_s: float = Field(
        30.0, gt=0, description="how long it stays open before one probe request is let through"
    )


class Target(BaseModel):
    """One place a request can be answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["triton", "openai"]
    model: str = Field(min_length=1, description="the model's name at the provider")
    timeout_s: float = Field(
        10.0, gt=0, description="deadline for the first piece, and between two pieces"
    )
    address: str | None = Field(
        None, description="triton: its gRPC address; unset: LLMOPS_TRITON_GRPC_ADDR"
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://\S+$",
        description="openai (required): the API's base URL, e.g. http://vllm:8000/v1",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="openai: the NAME of the environment variable holding the API key "
        "(never the key itself); unset: no Authorization header",
    )
    retries: int = Field(
        0, ge=0, le=10, description="more attempts after a failure before the next target"
    )
    backoff_s: float = Field(
        0.2, ge=0, description="the wait before the first retry; doubled before each next one"
    )
    circuit: Circuit = Field(default_factory=Circuit)
    tokenizer: str | None = Field(
        None,
        min_length=1,
        description="a tokenizer.json (the `tokenizers` format), or a folder holding one, "
        "that counts usage when the target reports none (relative: under LLMOPS_MODELS_DIR)",
    )

    @model_validator(mode="after")
    def _check_fields(self) -> Target:
        if self.provider == "openai":
            if self.base_url is None:
                raise ValueError("an openai target needs base_url")
            if self.address is not None:
                raise ValueError("address is for triton targets; openai targets use base_url")
        else:
            extra = [f for f in ("base_url", "api_key_env") if getattr(self, f) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only for openai targets")
        return self

    @property
    def name(self) -> str:
        """How the target is named in replies and errors: `<provider>/<model>`."""
        return f"{self.provider}/{self.model}"

    @property
    def key(self) -> str:
        """Which upstream it is (its circuit breaker's key): the name and where it is."""
        return f"{self.name}@{self.address or self.base_url or ''}"


class Routes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str = Field(min_length=1, description="the alias used when a request names none")
    aliases: dict[str, list[Target]]

    @model_validator(mode="after")
    def _check(self) -> Routes:
        if self.default not in self.aliases:
            raise ValueError(
                f"default alias {self.default!r} is not one of the aliases {sorted(self.aliases)}"
            )
        empty = sorted(alias for alias, targets in self.aliases.items() if not targets)
        if empty:
            raise ValueError(f"aliases without targets: {', '.join(empty)}")
        return self

    def targets(self, alias: str) -> list[Target] | None:
        """The targets of `alias` (empty: the default alias), or None when it is unknown."""
        return self.aliases.get(alias or self.default)


def load_routes(path: Path) -> Routes:
    """Read and validate the routes file; RoutesFileError says what is wrong and where."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RoutesFileError(
            f"cannot read the routes file {path} (cwd {Path.cwd()}): {exc}"
        ) from exc
    except yaml.YAMLError as exc:
        raise RoutesFileError(f"the routes file {path} is not valid YAML: {exc}") from exc
    try:
        return Routes.model_validate(raw)
    except ValidationError as exc:
        raise RoutesFileError(f"the routes file {path} is invalid: {exc}") from exc
