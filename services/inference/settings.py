"""Inference settings (`LLMOPS_*`)."""

from __future__ import annotations

from llmops.routing.settings import RoutesSettings


class InferenceSettings(RoutesSettings):
    inference_metrics_port: int = 9464
