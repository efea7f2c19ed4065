"""Inference settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmops.settings import CommonSettings


class InferenceSettings(CommonSettings):
    routes_file: Path = Field(
        Path("deploy/inference/routes.yaml"),
        description="model aliases and their ordered targets (relative: to the working dir)",
    )
    inference_metrics_port: int = 9464
