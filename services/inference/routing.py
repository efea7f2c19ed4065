"""The routes file: model aliases, each an ordered list of targets tried in turn.

```yaml
default: answerer
aliases:
  answerer:
    - {provider: triton, model: extractive_answerer, timeout_s: 10}
```

Validated with pydantic when the service starts; a bad file stops start-up
with a message naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inference.errors import RoutesFileError


class Target(BaseModel):
    """One place a request can be answered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: Literal["triton"]
    model: str = Field(min_length=1, description="the model's name at the provider")
    timeout_s: float = Field(
        10.0, gt=0, description="deadline for the first piece, and between two pieces"
    )
    address: str | None = Field(
        None, description="the provider's gRPC address; unset: LLMOPS_TRITON_GRPC_ADDR"
    )

    @property
    def name(self) -> str:
        """How the target is named in replies and errors: `<provider>/<model>`."""
        return f"{self.provider}/{self.model}"


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
