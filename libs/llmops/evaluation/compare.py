"""Run B against run A: paired deltas with confidence intervals, CI gates, a PR-comment report.

Both runs scored the same items, so each metric is compared item by item (a
bootstrap CI of the mean delta, Wilcoxon or McNemar): far more sensitive than
two bare averages, and honest about noise. A gate reads the interval, not the
point estimate: `--no-regression token_f1` fails when the CI's lower bound is
below -margin, i.e. when a regression cannot be ruled out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmops.evaluation.queries import RUN_ITEMS_SQL, RUN_SQL
from llmops.evaluation.runner import COST_METRICS, ERROR_EVALUATOR, RunResult
from llmops.evaluation.stats import PairedComparison, paired_compare
from llmops.queryrows import records_of
from llmops.v1 import analytics_pb2, analytics_pb2_grpc

# Metrics where less is better: a rise is the regression.
LOWER_IS_BETTER = frozenset({*COST_METRICS, "refusal"})
_GATE_RE = re.compile(r"^([a-z][a-z0-9_]*)$")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
_QUERY_TIMEOUT_S = 30.0


class CompareError(ValueError):
    """A run that cannot be compared (unknown, still running) or a malformed gate."""


@dataclass(frozen=True)
class RunScores:
    """One run's per-item scores (metric -> item id -> score) and what describes it."""

    run_id: str
    scores: dict[str, dict[str, float]]
    meta: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run: RunResult) -> RunScores:
        return cls(run.run_id, run.scores(), _meta(run.__dict__))

    def mean(self, metric: str) -> float | None:
        values = self.scores.get(metric)
        return sum(values.values()) / len(values) if values else None


@dataclass(frozen=True)
class Comparison:
    stats: PairedComparison

    @property
    def higher_is_better(self) -> bool:
        return self.stats.metric not in LOWER_IS_BETTER

    @property
    def verdict(self) -> str:
        """`better` / `worse` when the CI excludes 0, else `no clear change`."""
        low, high = self.stats.ci_low, self.stats.ci_high
        if low > 0:
            return "better" if self.higher_is_better else "worse"
        if high < 0:
            return "worse" if self.higher_is_better else "better"
        return "no clear change"


@dataclass(frozen=True)
class Gate:
    kind: Literal["fail_under", "no_regression"]
    metric: str
    value: float  # fail_under: the floor of B's mean; no_regression: the margin

    def __str__(self) -> str:
        if self.kind == "fail_under":
            return f"--fail-under {self.metric}={self.value:g}"
        return f"--no-regression {self.metric}:{self.value:g}"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    passed: bool
    detail: str


def parse_fail_under(text: str) -> Gate:
    """`token_f1=0.6`."""
    metric, sep, value = text.partition("=")
    if not sep:
        raise CompareError(f"{text!r}: expected METRIC=VALUE, e.g. token_f1=0.6")
    return Gate("fail_under", _metric(metric, text), _number(value, text))


def parse_no_regression(text: str) -> Gate:
    """`token_f1` (margin 0) or `token_f1:0.02`."""
    metric, sep, margin = text.partition(":")
    value = _number(margin, text) if sep else 0.0
    if value < 0:
        raise CompareError(f"{text!r}: the margin is not negative")
    return Gate("no_regression", _metric(metric, text), value)


def _metric(metric: str, text: str) -> str:
    if not _GATE_RE.match(metric):
        raise CompareError(f"{text!r}: {metric!r} is not a metric name")
    return metric


def _number(value: str, text: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CompareError(f"{text!r}: {value!r} is not a number") from None


def compare_runs(
    a: RunScores, b: RunScores, *, n_boot: int = 10_000, seed: int = 0
) -> list[Comparison]:
    """Every metric both runs have, over the items both answered, by metric name."""
    out = []
    for metric in sorted(set(a.scores) & set(b.scores)):
        items = sorted(set(a.scores[metric]) & set(b.scores[metric]))
        if not items:
            continue
        stats = paired_compare(
            metric,
            [a.scores[metric][i] for i in items],
            [b.scores[metric][i] for i in items],
            n_boot=n_boot,
            seed=seed,
        )
        out.append(Comparison(stats))
    return out


def check_gates(
    comparisons: Sequence[Comparison], b: RunScores, gates: Sequence[Gate]
) -> list[GateResult]:
    """Each gate's outcome; a gate whose metric is missing fails (it could not be checked)."""
    by_metric = {c.stats.metric: c for c in comparisons}
    results = []
    for gate in gates:
        if gate.kind == "fail_under":
            mean = b.mean(gate.metric)
            if mean is None:
                results.append(GateResult(gate, False, f"run B has no {gate.metric}"))
            else:
                ok = mean >= gate.value
                results.append(
                    GateResult(
                        gate, ok, f"B's mean {mean:.4f} {'>=' if ok else '<'} {gate.value:g}"
                    )
                )
            continue
        found = by_metric.get(gate.metric)
        if found is None:
            results.append(GateResult(gate, False, f"{gate.metric} is not in both runs"))
            continue
        s = found.stats
        if found.higher_is_better:
            ok = s.ci_low >= -gate.value
            bound = f"CI low {s.ci_low:+.4f} {'>=' if ok else '<'} {-gate.value:+g}"
        else:
            ok = s.ci_high <= gate.value
            bound = f"CI high {s.ci_high:+.4f} {'<=' if ok else '>'} {gate.value:+g}"
        results.append(GateResult(gate, ok, f"delta {s.delta:+.4f}, {bound}"))
    return results


def md_escape(text: str) -> str:
    """Untrusted text (run ids, prompt names, reasons) as literal Markdown in a table cell."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def markdown_report(
    a: RunScores,
    b: RunScores,
    comparisons: Sequence[Comparison],
    gates: Sequence[GateResult],
) -> str:
    """A report fit for a pull-request comment: the runs, a table per metric, the gates."""
    failed = [g for g in gates if not g.passed]
    title = "failed" if failed else "passed" if gates else "compared"
    lines = [
        f"### Evaluation: {title}",
        "",
        "| | run A (baseline) | run B (candidate) |",
        "| --- | --- | --- |",
        f"| run | `{_code(a.run_id)}` | `{_code(b.run_id)}` |",
    ]
    for key in ("dataset", "prompt", "model", "items", "failed_items"):
        if key in a.meta or key in b.meta:
            lines.append(
                f"| {key} | {md_escape(a.meta.get(key, ''))} | {md_escape(b.meta.get(key, ''))} |"
            )
    lines += [
        "",
        "| metric | n | A | B | delta (B - A) | 95% CI | p | test | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |",
    ]
    for c in comparisons:
        s = c.stats
        mark = {"better": "🟢 better", "worse": "🔴 worse"}.get(c.verdict, "⚪ no clear change")
        lines.append(
            f"| `{_code(s.metric)}` | {s.n} | {s.mean_a:.4f} | {s.mean_b:.4f} | {s.delta:+.4f} "
            f"| [{s.ci_low:+.4f}, {s.ci_high:+.4f}] | {s.p_value:.3g} | {s.test} | {mark} |"
        )
    if gates:
        lines += ["", "**Gates**", ""]
        lines += [
            f"- {'✅' if g.passed else '❌'} `{_code(str(g.gate))}`: {md_escape(g.detail)}"
            for g in gates
        ]
    return "\n".join(lines) + "\n"


def _code(text: str) -> str:
    """Inside backticks nothing is Markdown but a backtick, and a pipe still ends a cell."""
    return " ".join(text.replace("`", "'").replace("|", "\\|").split())


def _meta(row: dict[str, Any]) -> dict[str, str]:
    prompt = f"{row.get('prompt', '')}@{row.get('prompt_version', '')}".rstrip("@")
    items = row.get("items", "")
    return {
        "dataset": f"{row.get('dataset', '')}@{row.get('dataset_version', '')}",
        "prompt": prompt,
        "model": str(row.get("model", "") or "default"),
        "items": str(len(items) if isinstance(items, list) else items),
        "failed_items": str(row.get("failed_items", "")),
        "status": str(row.get("status", "")),
    }


async def query(
    stub: analytics_pb2_grpc.AnalyticsStub, key: str, sql: str, parameters: dict[str, str]
) -> list[dict[str, Any]]:
    """Rows of the analytics SQL API as dicts by column name."""
    reply = await stub.Query(
        analytics_pb2.QueryRequest(sql=sql, parameters=parameters),
        metadata=(("authorization", f"Bearer {key}"),),
        timeout=_QUERY_TIMEOUT_S,
    )
    return records_of(reply)


_UNKNOWN_RUN_WAIT_S = 3.0


async def load_run(
    stub: analytics_pb2_grpc.AnalyticsStub, key: str, run_id: str, wait_s: float = 30.0
) -> RunScores:
    """A finished run's scores from ClickHouse, waiting up to `wait_s` for the last rows
    (analytics inserts in batches, so a run that just ended may not be all there yet; the
    run's row says how many evaluation rows it published). A run with no row at all is
    given only a few seconds: its start was stored long before it could end."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + wait_s
    while True:
        runs = await query(stub, key, RUN_SQL, {"run_id": run_id})
        run = runs[0] if runs else None
        rows = await query(stub, key, RUN_ITEMS_SQL, {"run_id": run_id}) if run else []
        complete = (
            run is not None and run["status"] != "running" and len(rows) >= int(run["evaluations"])
        )
        unknown = run is None and loop.time() > started + _UNKNOWN_RUN_WAIT_S
        if complete or unknown or loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    if run is None:
        raise CompareError(f"no run {run_id!r} (for this key's tenant)")
    if run["status"] == "running":
        raise CompareError(f"run {run_id} is still running")
    scores: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["evaluator"] == ERROR_EVALUATOR or row["evaluator"].endswith("_unscored"):
            continue
        scores.setdefault(row["evaluator"], {})[row["item_id"]] = float(row["score"])
    return RunScores(run_id, scores, _meta(run))
