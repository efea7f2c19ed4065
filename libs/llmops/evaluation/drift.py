"""Drift tests: are recent questions (or scores) still distributed like a reference window?

Questions: a kernel two-sample test on their embeddings. MMD (maximum mean discrepancy)
with an RBF kernel sees any difference between the two distributions, not only a moved
mean, needs no training (a classifier test would), and its permutation p-value is exact
whatever the embedding's geometry, so the false-alarm rate is the alpha one sets.
Scores: PSI (the industry's rule of thumb: 0.1 moderate, 0.2 significant shift) and the
two-sample Kolmogorov-Smirnov test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

from llmops.evaluation.stats import Values

FloatArray = npt.NDArray[np.float64]
_PSI_FLOOR = 1e-4  # a bin empty on one side would make PSI infinite


@dataclass(frozen=True)
class DriftResult:
    """One test's verdict. `threshold` is alpha for tests with a p-value (drifted when
    p <= alpha), the PSI value itself for PSI (whose p_value is -1: it has none)."""

    method: str
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    n_reference: int
    n_recent: int


def mmd_test(
    reference: npt.ArrayLike,
    recent: npt.ArrayLike,
    *,
    alpha: float = 0.01,
    n_permutations: int = 500,
    seed: int = 0,
    max_samples: int = 500,
) -> DriftResult:
    """Unbiased MMD^2 between two sets of embeddings, with a permutation p-value.

    Rows are L2-normalised (cosine geometry, as the embeddings are searched) and at most
    `max_samples` per side are kept (drawn at random). The RBF bandwidth is the median
    distance between all pooled points (the median heuristic). The kernel matrix of the
    pooled sample is computed once; a permutation only relabels its rows, so all the
    permuted statistics come from one matrix product with the label vectors."""
    rng = np.random.default_rng(seed)
    x = _subsample(_unit_rows(reference, "reference"), max_samples, rng)
    y = _subsample(_unit_rows(recent, "recent"), max_samples, rng)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimensions differ: {x.shape[1]} and {y.shape[1]}")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")
    n, m = len(x), len(y)
    pooled = np.vstack([x, y])
    gram = pooled @ pooled.T
    squared_norms = np.diag(gram)  # 1, or 0 for an all-zero embedding
    sq_dist = np.maximum(squared_norms[:, None] + squared_norms[None, :] - 2.0 * gram, 0.0)
    off_diagonal = sq_dist[~np.eye(n + m, dtype=bool)]
    bandwidth_sq = float(np.median(off_diagonal)) or 1.0  # all points equal: any width
    kernel = np.exp(-sq_dist / (2.0 * bandwidth_sq))
    # Column 0 is the observed split (the first n rows are the reference), the rest permuted.
    labels = np.zeros((n + m, n_permutations + 1))
    labels[:n, 0] = 1.0
    for column in range(1, n_permutations + 1):
        labels[rng.permutation(n + m)[:n], column] = 1.0
    statistics = _unbiased_mmd2(kernel, labels, n, m)
    observed = float(statistics[0])
    p_value = float((1 + np.count_nonzero(statistics[1:] >= observed)) / (1 + n_permutations))
    return DriftResult("mmd", observed, p_value, alpha, p_value <= alpha, n, m)


def psi(
    reference: Values, recent: Values, *, bins: int = 10, threshold: float = 0.2
) -> DriftResult:
    """Population stability index over quantile bins of the reference.

    Tied quantiles (scores piled on 0 or 1) merge into one bin; values outside the
    reference's range fall into the end bins. Small samples inflate PSI by about
    (bins - 1) * (1/n_reference + 1/n_recent): windows of a few hundred keep that below 0.1."""
    ref, new = _values(reference, "reference"), _values(recent, "recent")
    if bins < 2:
        raise ValueError("bins must be at least 2")
    inner_edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = _bin_shares(ref, inner_edges)
    actual = _bin_shares(new, inner_edges)
    value = float(np.sum((actual - expected) * np.log(actual / expected)))
    return DriftResult("psi", value, -1.0, threshold, value >= threshold, len(ref), len(new))


def ks_test(reference: Values, recent: Values, *, alpha: float = 0.01) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov: the largest gap between the two empirical CDFs."""
    ref, new = _values(reference, "reference"), _values(recent, "recent")
    result = stats.ks_2samp(ref, new)
    p_value = float(result.pvalue)
    return DriftResult(
        "ks", float(result.statistic), p_value, alpha, p_value <= alpha, len(ref), len(new)
    )


def _unbiased_mmd2(kernel: FloatArray, labels: FloatArray, n: int, m: int) -> FloatArray:
    """MMD^2 (unbiased: the kernel's diagonal left out) for each label column (1 = first
    sample). With s the labels, K s gives every block sum: s'Ks, s'K(1-s), (1-s)'K(1-s)."""
    row_sums = kernel.sum(axis=1)
    total = float(row_sums.sum())
    within_x = np.einsum("ip,ip->p", labels, kernel @ labels)
    x_to_all = row_sums @ labels
    between = x_to_all - within_x
    within_y = total - 2.0 * x_to_all + within_x
    diagonal = 1.0  # RBF: k(a, a) = 1
    xx = (within_x - n * diagonal) / (n * (n - 1))
    yy = (within_y - m * diagonal) / (m * (m - 1))
    result: FloatArray = xx + yy - 2.0 * between / (n * m)
    return result


def _unit_rows(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise ValueError(f"{name}: need a 2-d array of at least two embeddings")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    unit: FloatArray = array / np.where(norms == 0, 1.0, norms)
    return unit


def _subsample(rows: FloatArray, limit: int, rng: np.random.Generator) -> FloatArray:
    if len(rows) <= limit:
        return rows
    picked: FloatArray = rows[rng.choice(len(rows), size=limit, replace=False)]
    return picked


def _values(values: Values, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0 or not np.isfinite(array).all():
        raise ValueError(f"{name}: need a non-empty list of finite numbers")
    return array


def _bin_shares(values: FloatArray, inner_edges: FloatArray) -> FloatArray:
    """The share of values in each bin (bin i: edge[i-1] <= v < edge[i]), floored above 0."""
    counts = np.bincount(
        np.searchsorted(inner_edges, values, side="right"), minlength=len(inner_edges) + 1
    )
    shares: FloatArray = np.maximum(counts / len(values), _PSI_FLOOR)
    return shares
