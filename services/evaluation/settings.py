"""Evaluation settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from llmops.settings import CommonSettings


class EvaluationSettings(CommonSettings):
    evaluation_metrics_port: int = 9469
    evaluation_sample_rate: float = Field(
        0.1, ge=0, le=1, description="the share of each tenant's interactions scored online"
    )
    evaluation_sample_rates: dict[str, float] = Field(
        default_factory=dict,
        description='per-tenant shares over the default, as JSON: {"acme": 0.5, "beta": 0}',
    )
    evaluation_policy: str = Field(
        "evaluation", description="the guardrail policy answers are scored with"
    )
    evaluation_policy_file: Path = Field(
        Path("deploy/guardrails/policies/evaluation.yaml"),
        description="the baseline tenant's evaluation policy, stored when it has none yet",
    )
    evaluation_batch_size: int = Field(64, gt=0, description="interactions pulled at once")
    evaluation_concurrency: int = Field(
        8, gt=0, description="interactions scored side by side (each calls three services)"
    )
    evaluation_timeout_s: float = Field(10.0, gt=0, description="deadline of each upstream call")
    drift_recent_s: float = Field(3600.0, gt=0, description="the recent window, up to now")
    drift_reference_s: float = Field(
        86400.0, gt=0, description="the reference window, just before the recent one"
    )
    drift_interval_s: float = Field(300.0, gt=0, description="how often every tenant is checked")
    drift_min_samples: int = Field(
        50, ge=2, description="samples each window needs before a signal is tested"
    )
    drift_max_samples: int = Field(
        300, ge=2, description="samples per window a test takes (and the reservoirs keep)"
    )
    drift_buckets: int = Field(
        12, ge=1, description="time buckets per recent window (the windows slide by one)"
    )
    drift_alpha: float = Field(0.01, gt=0, lt=1, description="p-value that counts as drift")
    drift_permutations: int = Field(500, ge=1, description="permutations of the MMD test")
    drift_psi_threshold: float = Field(0.2, gt=0, description="PSI that counts as drift")
    drift_embed_batch: int = Field(64, gt=0, description="questions per Embed call")

    @field_validator("evaluation_sample_rates")
    @classmethod
    def _shares(cls, rates: dict[str, float]) -> dict[str, float]:
        wrong = {tenant: rate for tenant, rate in rates.items() if not 0 <= rate <= 1}
        if wrong:
            raise ValueError(f"a share is between 0 and 1: {wrong}")
        return rates
