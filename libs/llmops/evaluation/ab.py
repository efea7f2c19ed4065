"""A/B analysis of a split prompt label: each arm against the first, with significance.

Arms hold different users, so they are compared unpaired: a two-proportion test
on thumbs-up, Mann-Whitney and a bootstrap CI on online scores. Teams look
every day, and a fixed-horizon p-value looked at daily cries wolf far above its
alpha; the verdict therefore reads the sequential (always-valid) p-value on
thumbs-up. Below the minimum sample there is no verdict at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from llmops.evaluation.compare import query
from llmops.evaluation.queries import AB_ARMS_SQL, AB_SCORES_SQL, time_param
from llmops.evaluation.stats import (
    bootstrap_mean_diff,
    mann_whitney,
    sequential_proportion_p,
    two_proportion_test,
)
from llmops.v1 import analytics_pb2_grpc

ALPHA = 0.05
NOT_ENOUGH = "not enough data"


@dataclass(frozen=True)
class Arm:
    tenant: str
    label: str
    arm: str
    requests: int
    errors: int
    thumbs_up: int
    thumbs_down: int
    thumbs_up_rate: float | None
    p95_ms: float | None
    cost_per_request: float | None
    online_scores: dict[str, float]
    online_scored: dict[str, int]
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ratings(self) -> int:
        return self.thumbs_up + self.thumbs_down


@dataclass(frozen=True)
class ScoreTest:
    evaluator: str
    delta: float  # arm mean - baseline mean
    ci_low: float
    ci_high: float
    p_value: float  # Mann-Whitney


@dataclass(frozen=True)
class ArmVerdict:
    arm: Arm
    baseline: Arm
    thumbs_z: float | None = None
    thumbs_p: float | None = None
    sequential_p: float | None = None
    scores: list[ScoreTest] = field(default_factory=list)
    verdict: str = NOT_ENOUGH


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`7d`, `12h`, `30m` before now."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    unit = units.get(text[-1:])
    try:
        amount = float(text[:-1])
    except ValueError:
        amount = -1
    if unit is None or amount < 0:
        raise ValueError(f"{text!r}: expected a duration like 7d, 12h or 30m")
    return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(**{unit: amount})


async def load_arms(
    stub: analytics_pb2_grpc.AnalyticsStub, key: str, prompt: str, label: str, since: dt.datetime
) -> list[Arm]:
    """Every arm of `prompt` since `since` (of `label` when given), the first arm first."""
    params = {"prompt": prompt, "since": time_param(since)}
    rows = await query(stub, key, AB_ARMS_SQL, params)
    samples = {
        (r["tenant"], r["label"], r["arm"]): r["scores"]
        for r in await query(stub, key, AB_SCORES_SQL, params)
    }
    return [
        _arm(row, samples.get((row["tenant"], row["label"], row["arm"]), {}))
        for row in rows
        if not label or row["label"] == label
    ]


def _arm(row: dict[str, Any], samples: dict[str, list[float]]) -> Arm:
    def number(name: str) -> float | None:
        value = row.get(name)
        return None if value is None else float(value)

    return Arm(
        tenant=row["tenant"],
        label=row["label"],
        arm=row["arm"],
        requests=int(row["requests"]),
        errors=int(row["errors"]),
        thumbs_up=int(row["thumbs_up"] or 0),
        thumbs_down=int(row["thumbs_down"] or 0),
        thumbs_up_rate=number("thumbs_up_rate"),
        p95_ms=number("p95_ms"),
        cost_per_request=number("cost_per_request"),
        online_scores={k: float(v) for k, v in (row.get("online_scores") or {}).items()},
        online_scored={k: int(v) for k, v in (row.get("online_scored") or {}).items()},
        samples={k: [float(x) for x in v] for k, v in samples.items()},
    )


def analyse(arms: list[Arm], min_sample: int) -> list[ArmVerdict]:
    """Each arm against the first arm of its tenant and label."""
    out: list[ArmVerdict] = []
    baselines: dict[tuple[str, str], Arm] = {}
    for arm in arms:
        baseline = baselines.setdefault((arm.tenant, arm.label), arm)
        if arm is not baseline:
            out.append(versus(baseline, arm, min_sample))
    return out


def versus(baseline: Arm, arm: Arm, min_sample: int) -> ArmVerdict:
    if min(baseline.requests, arm.requests) < min_sample:
        smaller = min(baseline.requests, arm.requests)
        return ArmVerdict(
            arm, baseline, verdict=f"{NOT_ENOUGH} ({smaller} < {min_sample} requests)"
        )
    z = p = seq = None
    if baseline.ratings and arm.ratings:
        z, p = two_proportion_test(baseline.thumbs_up, baseline.ratings, arm.thumbs_up, arm.ratings)
        seq = sequential_proportion_p(
            baseline.thumbs_up, baseline.ratings, arm.thumbs_up, arm.ratings
        )
    scores = []
    for evaluator in sorted(set(baseline.samples) & set(arm.samples)):
        a, b = baseline.samples[evaluator], arm.samples[evaluator]
        if a and b:
            delta, low, high = bootstrap_mean_diff(a, b)
            scores.append(ScoreTest(evaluator, delta, low, high, mann_whitney(a, b)))
    return ArmVerdict(arm, baseline, z, p, seq, scores, _verdict(baseline, arm, seq, scores))


def _verdict(baseline: Arm, arm: Arm, seq: float | None, scores: list[ScoreTest]) -> str:
    if seq is not None and seq <= ALPHA:
        rate_a = baseline.thumbs_up / baseline.ratings
        rate_b = arm.thumbs_up / arm.ratings
        better = "more" if rate_b > rate_a else "fewer"
        return f"{arm.arm}: {better} thumbs-up than {baseline.arm} (sequential p {seq:.3g})"
    moved = [s for s in scores if s.p_value <= ALPHA and (s.ci_low > 0 or s.ci_high < 0)]
    if moved:
        parts = ", ".join(f"{s.evaluator} {s.delta:+.3f}" for s in moved)
        return f"{arm.arm} vs {baseline.arm}: {parts} (fixed-horizon; thumbs-up not decided yet)"
    return f"no significant difference between {arm.arm} and {baseline.arm} yet"
