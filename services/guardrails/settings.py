"""Guardrails settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmops.settings import CommonSettings


class GuardrailsSettings(CommonSettings):
    guardrails_metrics_port: int = 9468
    guardrails_default_policy_file: Path = Field(
        Path("deploy/guardrails/policies/default.yaml"),
        description="the baseline tenant's default policy, stored when it has none yet",
    )
    guardrails_max_text_chars: int = Field(
        100_000, gt=0, description="the longest question, passage or answer a check takes"
    )
    guardrails_max_document_chars: int = Field(
        20_000_000, gt=0, description="the longest document text a check takes"
    )
    guardrails_workers: int = Field(
        2, gt=0, description="threads running checks side by side (ONNX Runtime releases the GIL)"
    )
    guardrails_encoder_threads: int = Field(
        1,
        gt=0,
        description="ONNX Runtime threads per encoder call: 2 cuts one check's latency by ~30% "
        "here, but checks side by side then get through fewer per second",
    )
