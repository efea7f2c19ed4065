"""Gateway settings (`LLMOPS_*`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from llmops.routing.client import Mode
from llmops.routing.settings import RoutesSettings


class GatewaySettings(RoutesSettings):
    routing: Mode = Field(
        Mode.AUTO,
        description="where the gateway sends an alias: auto (in-process when all its targets "
        "are hosted, else the inference service), remote (always the service), local (always "
        "in-process, Triton included)",
    )
    prompts_file: Path = Field(
        Path("deploy/gateway/prompts.yaml"),
        description="the prompt registry's seed, pushed at start-up (identical content stores "
        "nothing; relative: to the working dir)",
    )
    feedback_lookup_s: float = Field(
        5.0,
        gt=0,
        description="how long feedback waits for its interaction to reach ClickHouse",
    )
    gateway_metrics_port: int = 9465
    request_timeout_s: float = Field(
        60.0, gt=0, description="deadline of a request whose caller sets none (HTTP, gRPC)"
    )
    max_request_bytes: int = Field(1_000_000, gt=0, description="largest HTTP body accepted")
    exact_cache_ttl_s: float = Field(
        600.0, gt=0, le=86400, description="how long an exact-cache answer is served"
    )
    semantic_cache_min_score: float = Field(
        0.95, gt=0, le=1, description="cosine similarity an earlier question must reach"
    )
    semantic_cache_ttl_s: float = Field(
        3600.0, gt=0, description="how old a semantic-cache answer may be"
    )
    event_text: Literal["off", "redacted", "full"] = Field(
        "redacted",
        description="question/answer text in interaction events: none, PII-masked, or all",
    )
    event_ack_wait_s: float = Field(
        10.0,
        ge=0,
        description="the longest an answer waits for its interaction event to be stored "
        "(never past the request's deadline; then it goes out and the event keeps retrying)",
    )
    default_top_k: int = Field(5, gt=0, le=50, description="passages retrieved per request")
    gateway_replicas: int = Field(
        1, gt=0, description="the most gateway replicas running at once (budgets' safety margin)"
    )
