"""Significance for every comparison: paired run-vs-run deltas, A/B arms, sequential looks.

Offline runs score the same items, so they are compared pair by pair: a bootstrap
confidence interval of the mean delta (what a CI gate reads: "the lower bound is above
-margin") and a paired test, Wilcoxon signed-rank for scores and exact McNemar for
pass/fail metrics. A/B arms hold different users, so they are compared unpaired
(two-proportion z-test for rates, Mann-Whitney or bootstrap for scores).

A fixed-horizon test looked at every day finds a "significant" difference between equal
arms far more often than its alpha (each look is another chance). `sequential_proportion_p`
is an always-valid p-value (Johari, Koomen, Pekelis, Walsh 2017, "Peeking at A/B tests"):
the chance that it ever drops below alpha, however often one looks, is at most alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from llmops.evaluation.metrics import BINARY_METRICS

FloatArray = npt.NDArray[np.float64]
# Scores as plain lists or numpy arrays.
Values = Sequence[float] | npt.NDArray[np.floating[Any]] | npt.NDArray[np.integer[Any]]
# Bootstrap resamples are drawn in blocks of about this many values: 10,000 resamples of
# 5,000 items at once would be 400 MB of indices.
_BOOTSTRAP_BLOCK = 2_000_000
# Mixing standard deviation of the sequential test, on the absolute difference of two
# rates. Johari et al. advise matching it to the effects one expects. 0.1 is a compromise:
# a 5-point move in thumbs-up is still found (with some thousands of ratings), and a
# gross regression (a broken prompt) is called after a few dozen, where 0.05 would need
# hundreds. The test stays valid (only slower) for any value.
SEQUENTIAL_TAU = 0.1


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on one metric over the same items; delta = mean_b - mean_a."""

    metric: str
    n: int
    mean_a: float
    mean_b: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str  # "wilcoxon" | "mcnemar"


def paired_compare(
    metric: str,
    a: Values,
    b: Values,
    *,
    binary: bool | None = None,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """The paired delta's bootstrap CI and a paired test; `binary` None: by the metric's name
    (BINARY_METRICS). Equal runs (every delta 0) get p = 1."""
    x, y = _array(a, "a"), _array(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    is_binary = metric in BINARY_METRICS if binary is None else binary
    deltas = np.round(y - x, 12)  # 0.3 - 0.2 vs 0.2 - 0.1: float noise is no difference
    low, high = _percentile_ci(_bootstrap_means(deltas, n_boot, seed), confidence)
    if is_binary:
        p_value, test = mcnemar(x, y), "mcnemar"
    else:
        p_value, test = _wilcoxon(deltas), "wilcoxon"
    return PairedComparison(
        metric=metric,
        n=len(x),
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        delta=float(deltas.mean()),
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        test=test,
    )


def mcnemar(a: Values, b: Values) -> float:
    """Exact McNemar: only discordant pairs tell the runs apart; under no difference each
    is as likely to favour A as B, a binomial with p = 1/2."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not np.isin(x, (0.0, 1.0)).all() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("McNemar needs pass/fail values (0 or 1)")
    only_b = int(((x == 0) & (y == 1)).sum())
    only_a = int(((x == 1) & (y == 0)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue)


def two_proportion_test(
    successes_a: int, n_a: int, successes_b: int, n_b: int
) -> tuple[float, float]:
    """Pooled two-proportion z-test: (z, two-sided p); z > 0 when B's rate is higher."""
    _check_counts(successes_a, n_a, successes_b, n_b)
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:  # both all-success or all-failure: nothing tells them apart
        return 0.0, 1.0
    z = (rate_b - rate_a) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def mann_whitney(a: Values, b: Values) -> float:
    """Two-sided Mann-Whitney U p-value (unpaired scores; no normality assumed)."""
    x, y = _array(a, "a"), _array(b, "b")
    if np.ptp(np.concatenate([x, y])) == 0:  # every value equal: scipy would return nan
        return 1.0
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def bootstrap_mean_diff(
    a: Values,
    b: Values,
    *,
    n_boot: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Unpaired: (mean_b - mean_a, CI low, CI high), each arm resampled on its own."""
    x, y = _array(a, "a"), _array(b, "b")
    rng = np.random.default_rng(seed)
    means_a = _bootstrap_means(x, n_boot, rng)
    means_b = _bootstrap_means(y, n_boot, rng)
    low, high = _percentile_ci(means_b - means_a, confidence)
    return float(y.mean() - x.mean()), low, high


def sequential_proportion_p(
    successes_a: int, n_a: int, successes_b: int, n_b: int, *, tau: float = SEQUENTIAL_TAU
) -> float:
    """An always-valid p-value for rate B != rate A: 1 / the mixture likelihood ratio.

    The mixture SPRT of Johari et al. (2017) on the difference of rates d = rate_b - rate_a,
    normal approximation: d is N(theta, V) with V = r(1-r)(1/na + 1/nb) at the pooled rate r
    (the variance under no difference: an arm with all successes has none of its own), and theta is
    mixed over N(0, tau^2), which gives the likelihood ratio
        L = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))).
    Under no difference L is a martingale, so (Ville's inequality) L ever reaches 1/alpha
    with probability at most alpha: stop the first time p <= alpha, or report the running
    minimum of p over the looks, both valid however often one looks. See SEQUENTIAL_TAU.
    """
    if tau <= 0:
        raise ValueError("tau must be positive")
    _check_counts(successes_a, n_a, successes_b, n_b)
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:  # every rating alike in both arms: no evidence either way
        return 1.0
    d, t2 = rate_b - rate_a, tau * tau
    log_ratio = 0.5 * math.log(variance / (variance + t2)) + d * d * t2 / (
        2 * variance * (variance + t2)
    )
    return 1.0 if log_ratio <= 0 else math.exp(-log_ratio)


def _bootstrap_means(
    values: FloatArray, n_boot: int, seed: int | np.random.Generator
) -> FloatArray:
    """The means of `n_boot` resamples with replacement (vectorised, in bounded blocks)."""
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")
    rng = np.random.default_rng(seed)
    n = len(values)
    per_block = max(1, _BOOTSTRAP_BLOCK // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, per_block):
        stop = min(n_boot, start + per_block)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return means


def _percentile_ci(samples: FloatArray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _wilcoxon(deltas: FloatArray) -> float:
    """Wilcoxon signed-rank p-value; zero deltas (ties) are left out, all zero gives 1."""
    if not deltas.any():
        return 1.0
    return float(stats.wilcoxon(deltas).pvalue)


def _array(values: Values, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name}: need a non-empty list of numbers")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: values must be finite")
    return array


def _check_counts(successes_a: int, n_a: int, successes_b: int, n_b: int) -> None:
    for successes, n, arm in ((successes_a, n_a, "a"), (successes_b, n_b, "b")):
        if n <= 0 or not 0 <= successes <= n:
            raise ValueError(f"arm {arm}: need 0 <= successes <= n and n > 0")
