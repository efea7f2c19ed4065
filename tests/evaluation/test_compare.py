"""`eval compare` on hand-built runs: paired tests, gates, verdicts and the Markdown report."""

from __future__ import annotations

import pytest

from llmops.evaluation.compare import (
    CompareError,
    Gate,
    RunScores,
    check_gates,
    compare_runs,
    markdown_report,
    md_escape,
    parse_fail_under,
    parse_no_regression,
)

ITEMS = [f"q{i:02d}" for i in range(30)]
GOOD_F1 = [0.6 + 0.3 * ((i * 7) % 10) / 10 for i in range(30)]  # 0.6 .. 0.87, varied


def run(run_id: str, **metrics: list[float]) -> RunScores:
    return RunScores(
        run_id,
        {m: dict(zip(ITEMS, values, strict=True)) for m, values in metrics.items()},
        {"dataset": "golden@abc", "prompt": f"default@{run_id}", "model": "answerer"},
    )


def gates(*no_regression: str, fail_under: tuple[str, ...] = ()) -> list[Gate]:
    return [parse_fail_under(g) for g in fail_under] + [
        parse_no_regression(g) for g in no_regression
    ]


def test_a_worse_run_fails_no_regression_and_an_equal_one_passes() -> None:
    a = run("a", token_f1=GOOD_F1, latency_ms=[100.0] * 30)
    worse = run("b", token_f1=[v - 0.2 for v in GOOD_F1], latency_ms=[100.0] * 30)
    equal = run("c", token_f1=list(GOOD_F1), latency_ms=[100.0] * 30)

    (latency, f1) = compare_runs(a, worse)
    assert f1.stats.metric == "token_f1" and f1.stats.n == 30 and f1.stats.test == "wilcoxon"
    assert f1.stats.delta == pytest.approx(-0.2)
    assert f1.stats.ci_high < 0 and f1.stats.p_value < 0.001 and f1.verdict == "worse"
    [result] = check_gates([latency, f1], worse, gates("token_f1"))
    assert not result.passed and "CI low -0.2" in result.detail

    same = compare_runs(a, equal)
    assert [c.verdict for c in same] == ["no clear change"] * 2
    assert same[1].stats.p_value == 1.0 and same[1].stats.ci_low == 0.0
    assert all(r.passed for r in check_gates(same, equal, gates("token_f1", "latency_ms")))


def test_a_margin_tolerates_small_losses_only() -> None:
    a = run("a", token_f1=GOOD_F1)
    slightly = run("b", token_f1=[v - 0.01 for v in GOOD_F1])
    comparisons = compare_runs(a, slightly)
    assert not check_gates(comparisons, slightly, gates("token_f1"))[0].passed
    assert check_gates(comparisons, slightly, gates("token_f1:0.02"))[0].passed


def test_exact_match_is_paired_with_mcnemar() -> None:
    a_hits = [1.0] * 20 + [0.0] * 10
    b_hits = [0.0] * 12 + [1.0] * 8 + [0.0] * 10  # 12 items lost, none gained
    [em] = compare_runs(run("a", exact_match=a_hits), run("b", exact_match=b_hits))
    assert em.stats.test == "mcnemar"
    assert em.stats.p_value == pytest.approx(2 * 0.5**12)  # exact binomial on 12 discordant
    assert em.verdict == "worse"


def test_lower_is_better_for_latency_and_cost() -> None:
    a = run("a", latency_ms=[100.0 + i for i in range(30)])
    slower = run("b", latency_ms=[150.0 + i for i in range(30)])
    [latency] = compare_runs(a, slower)
    assert latency.stats.delta == pytest.approx(50) and latency.verdict == "worse"
    [result] = check_gates([latency], slower, gates("latency_ms:10"))
    assert not result.passed and "CI high" in result.detail
    [faster] = compare_runs(slower, a)
    assert faster.verdict == "better"


def test_fail_under_reads_run_b_and_a_missing_metric_fails_its_gate() -> None:
    a = run("a", token_f1=GOOD_F1)
    b = run("b", token_f1=GOOD_F1)
    comparisons = compare_runs(a, b)
    mean = sum(GOOD_F1) / 30
    passed, failed, missing, unknown = check_gates(
        comparisons,
        b,
        gates(
            "rouge_l", fail_under=(f"token_f1={mean - 0.01}", f"token_f1={mean + 0.01}", "bleu=0.1")
        ),
    )
    assert passed.passed and not failed.passed
    assert not missing.passed and "run B has no bleu" in missing.detail
    assert not unknown.passed and "not in both runs" in unknown.detail


def test_only_items_both_runs_answered_are_paired() -> None:
    a = run("a", token_f1=GOOD_F1)
    b = RunScores("b", {"token_f1": {i: a.scores["token_f1"][i] for i in ITEMS[:20]}})
    [f1] = compare_runs(a, b)
    assert f1.stats.n == 20 and f1.stats.delta == 0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("token_f1", "METRIC=VALUE"),
        ("token_f1=high", "not a number"),
        ("Token F1=1", "metric name"),
    ],
)
def test_bad_fail_under_gates_are_refused(text: str, problem: str) -> None:
    with pytest.raises(CompareError, match=problem):
        parse_fail_under(text)


def test_bad_no_regression_gates_are_refused() -> None:
    with pytest.raises(CompareError, match="not negative"):
        parse_no_regression("token_f1:-0.1")
    assert parse_no_regression("token_f1:0.05") == Gate("no_regression", "token_f1", 0.05)


def test_the_markdown_report_has_every_metric_and_gate_and_escapes_untrusted_text() -> None:
    a = run("a", token_f1=GOOD_F1, exact_match=[1.0] * 30)
    b = run("b", token_f1=[v - 0.2 for v in GOOD_F1], exact_match=[1.0] * 30)
    b.meta["prompt"] = "evil|<script>alert(1)</script>*bold*"
    comparisons = compare_runs(a, b)
    report = markdown_report(a, b, comparisons, check_gates(comparisons, b, gates("token_f1")))
    assert report.startswith("### Evaluation: failed")
    rows = [line for line in report.splitlines() if line.startswith("| `token_f1` |")]
    assert len(rows) == 1 and "-0.2000" in rows[0] and "🔴 worse" in rows[0]
    assert "| `exact_match` | 30 | 1.0000 | 1.0000 | +0.0000 |" in report
    assert "❌ `--no-regression token_f1:0`" in report
    assert "<script>" not in report and "evil\\|\\<script\\>" in report
    assert md_escape("a\nb | c") == "a b \\| c"
