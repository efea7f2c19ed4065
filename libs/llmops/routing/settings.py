"""Settings of every process that loads the routes file: the inference service and the
gateway (which runs the router in-process for some aliases, LLMOPS_ROUTING)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmops.settings import CommonSettings


class RoutesSettings(CommonSettings):
    routes_file: Path = Field(
        Path("deploy/inference/routes.yaml"),
        description="model aliases and their ordered targets (relative: to the working dir)",
    )
