"""Paired comparisons, unpaired A/B tests and the always-valid sequential p-value."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from llmops.evaluation.stats import (
    PairedComparison,
    bootstrap_mean_diff,
    mann_whitney,
    paired_compare,
    sequential_proportion_p,
    two_proportion_test,
)


def scores(n: int, seed: int) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).uniform(0.2, 0.8, n)


def test_a_known_shift_is_detected() -> None:
    a = scores(200, 1)
    b = a + 0.1 + np.random.default_rng(2).normal(0, 0.02, 200)
    result = paired_compare("token_f1", a, b)
    assert result.test == "wilcoxon" and result.n == 200
    assert result.delta == pytest.approx(0.1, abs=0.005)
    assert result.delta == pytest.approx(result.mean_b - result.mean_a)
    assert 0 < result.ci_low < result.delta < result.ci_high < 0.11
    assert result.p_value < 0.01


def test_a_worse_run_has_a_negative_interval() -> None:
    a = scores(100, 3)
    result = paired_compare("rouge_l", a, a - 0.05 + np.random.default_rng(4).normal(0, 0.05, 100))
    assert result.ci_high < 0 and result.p_value < 0.01


def test_an_equal_pair_is_not_significant() -> None:
    a = scores(200, 5)
    noisy = paired_compare("token_f1", a, a + np.random.default_rng(6).normal(0, 0.05, 200))
    assert noisy.ci_low < 0 < noisy.ci_high
    assert noisy.p_value > 0.1
    same = paired_compare("token_f1", a, a)
    assert same == PairedComparison(
        "token_f1", 200, same.mean_a, same.mean_a, 0, 0, 0, 1, "wilcoxon"
    )


def test_float_noise_is_no_difference() -> None:
    # 0.3 - 0.2 and 0.2 - 0.1 differ in the 17th digit; paired deltas of 0 for every item
    a = [0.1, 0.2, 0.7] * 10
    b = [x + 0.1 - 0.1 for x in a]
    assert paired_compare("token_f1", a, b).p_value == 1.0


def test_the_bootstrap_is_seeded_and_its_width_follows_the_confidence() -> None:
    a, b = scores(50, 7), scores(50, 8)
    first, again = paired_compare("f", a, b, seed=3), paired_compare("f", a, b, seed=3)
    assert first == again
    wide = paired_compare("f", a, b, confidence=0.99)
    assert wide.ci_low < first.ci_low and wide.ci_high > first.ci_high


def test_mcnemar_on_a_hand_built_discordant_table() -> None:
    # 40 items: 12 pass both, 18 fail both, 8 pass only in A, 2 pass only in B.
    a = [1] * 12 + [0] * 18 + [1] * 8 + [0] * 2
    b = [1] * 12 + [0] * 18 + [0] * 8 + [1] * 2
    result = paired_compare("exact_match", a, b)
    assert result.test == "mcnemar"
    # Only the 10 discordant pairs count: 2 of 10 favour B under p = 1/2,
    # two-sided p = 2 * P(X <= 2) = 2 * (1 + 10 + 45) / 1024 = 112 / 1024 = 0.109375
    assert result.p_value == pytest.approx(112 / 1024)
    assert result.p_value == pytest.approx(stats.binomtest(2, 10, 0.5).pvalue)
    assert result.delta == pytest.approx((14 - 20) / 40)  # B passes 14, A passes 20
    assert paired_compare("exact_match", a, a).p_value == 1.0


def test_binary_is_chosen_by_the_metric_name_or_by_the_caller() -> None:
    a, b = [1, 0, 1, 1, 0, 1], [1, 1, 0, 1, 1, 1]
    assert paired_compare("refusal", a, b).test == "mcnemar"
    assert paired_compare("thumbs_up", a, b).test == "wilcoxon"
    assert paired_compare("thumbs_up", a, b, binary=True).test == "mcnemar"
    with pytest.raises(ValueError, match="pass/fail"):
        paired_compare("token_f1", [0.5, 1.0], [1.0, 1.0], binary=True)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [([], [], "non-empty"), ([0.1, 0.2], [0.1], "differ in length"), ([math.nan], [0.1], "finite")],
)
def test_bad_paired_input_is_refused(a: list[float], b: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_compare("token_f1", a, b)


def test_two_proportion_test_against_a_hand_computation() -> None:
    # 40/100 vs 55/100: pooled p = 95/200 = 0.475,
    # se = sqrt(0.475 * 0.525 * (1/100 + 1/100)) = sqrt(0.0049875) = 0.0706222,
    # z = 0.15 / 0.0706222 = 2.12398, two-sided p = 2 * (1 - Phi(2.12398)) = 0.03367
    z, p = two_proportion_test(40, 100, 55, 100)
    assert z == pytest.approx(2.12398, abs=1e-5)
    assert p == pytest.approx(0.03367, abs=1e-5)
    z_back, p_back = two_proportion_test(55, 100, 40, 100)
    assert (z_back, p_back) == pytest.approx((-z, p))
    assert two_proportion_test(10, 10, 20, 20) == (0.0, 1.0)
    with pytest.raises(ValueError, match="arm b"):
        two_proportion_test(1, 10, 11, 10)


def test_mann_whitney_and_the_unpaired_bootstrap() -> None:
    low, high = scores(80, 9), scores(80, 10) + 0.2
    assert mann_whitney(low, high) < 0.001
    null = [mann_whitney(scores(80, 2 * i + 100), scores(80, 2 * i + 101)) for i in range(200)]
    assert np.mean(np.less_equal(null, 0.05)) <= 0.05 + 0.03  # its alpha, within binomial slack
    assert mann_whitney([1.0, 1.0], [1.0, 1.0, 1.0]) == 1.0
    delta, ci_low, ci_high = bootstrap_mean_diff(low, high)
    assert delta == pytest.approx(high.mean() - low.mean())
    assert 0 < ci_low < delta < ci_high
    delta, ci_low, ci_high = bootstrap_mean_diff(scores(80, 13), scores(60, 14))
    assert ci_low < 0 < ci_high


def test_the_sequential_p_value_detects_a_real_difference() -> None:
    assert sequential_proportion_p(300, 1000, 400, 1000) < 0.001
    assert sequential_proportion_p(300, 1000, 300, 1000) == 1.0
    assert sequential_proportion_p(0, 50, 0, 50) == 1.0  # no spread yet: no evidence
    # stricter than the fixed-horizon test at the same counts: it pays for every look
    fixed_p = two_proportion_test(300, 1000, 340, 1000)[1]
    assert fixed_p < 0.06 < sequential_proportion_p(300, 1000, 340, 1000)


def _share_ever_significant(p_value: Callable[[int, int, int, int], float]) -> float:
    """300 A/A experiments (both arms at 30%), each looked at every 50 users per arm up to
    2,000: the share in which some look gives p <= 0.05."""
    rng = np.random.default_rng(12)
    arm_a = (rng.random((300, 2000)) < 0.3).cumsum(axis=1)
    arm_b = (rng.random((300, 2000)) < 0.3).cumsum(axis=1)
    looks = range(50, 2001, 50)
    ever = [
        any(p_value(int(a[n - 1]), n, int(b[n - 1]), n) <= 0.05 for n in looks)
        for a, b in zip(arm_a, arm_b, strict=True)
    ]
    return sum(ever) / len(ever)


def test_the_sequential_p_value_stays_valid_under_peeking() -> None:
    # binomial slack: sd of a share of 300 at 5% is 0.0126; allow two of them
    assert _share_ever_significant(sequential_proportion_p) <= 0.05 + 0.025


def test_a_fixed_horizon_test_peeked_at_the_same_way_is_not() -> None:
    # Why the sequential test exists: 40 looks at a 5% test find "significance" in about a
    # quarter of experiments with no difference at all.
    assert _share_ever_significant(lambda *counts: two_proportion_test(*counts)[1]) > 0.15


def test_the_sequential_p_sees_arms_that_agree_within_themselves() -> None:
    """All thumbs up against all thumbs down: each arm has no spread of its own, the
    difference is still plain (the variance is the pooled one, as under no difference)."""
    assert sequential_proportion_p(30, 30, 0, 30) < 0.05
    assert sequential_proportion_p(30, 30, 30, 30) == 1.0  # alike: no evidence either way
