"""Drift tests: MMD on synthetic and real (MiniLM) question embeddings, PSI and KS on scores.

The synthetic questions and scores are the benchmark's (bench/eval_drift.py): a topic is
unit vectors around a centre (two questions of a topic have a cosine of about 0.2, like
real questions of one field), and a shift of k moves the centre by k standard deviations
of the noise along one direction.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from bench.eval_drift import Topic, groundedness_like
from scipy import stats

from llmops.encoder import OnnxEncoder
from llmops.evaluation.drift import DriftResult, ks_test, mmd_test, psi

ROOT = Path(__file__).resolve().parents[2]
Vectors = npt.NDArray[np.float64]


def _direct_mmd2(x: Vectors, y: Vectors, bandwidth_sq: float) -> float:
    """Unbiased MMD^2 written out block by block (the textbook formula)."""

    def k(a: Vectors, b: Vectors) -> Vectors:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        out: Vectors = np.exp(-d2 / (2 * bandwidth_sq))
        return out

    n, m = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )


def test_mmd_statistic_matches_the_textbook_formula() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(6, 5)) + 0.5
    x, y = (
        x / np.linalg.norm(x, axis=1, keepdims=True),
        y / np.linalg.norm(y, axis=1, keepdims=True),
    )
    pooled = np.vstack([x, y])
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    bandwidth_sq = float(np.median(d2[~np.eye(13, dtype=bool)]))  # the median heuristic
    result = mmd_test(x, y, n_permutations=50)
    assert result.statistic == pytest.approx(_direct_mmd2(x, y, bandwidth_sq))
    # rows are L2-normalised first: scaling an embedding changes nothing
    assert mmd_test(x * 3, y * 0.5, n_permutations=50).statistic == pytest.approx(result.statistic)


def test_mmd_detects_a_mean_shift_of_known_size() -> None:
    topic, rng = Topic(1), np.random.default_rng(2)
    reference = topic.sample(200, rng)
    shifted = mmd_test(reference, topic.sample(200, rng, shift_sd=2.0))
    assert shifted.drifted and shifted.p_value == pytest.approx(1 / 501)
    assert shifted.method == "mmd" and shifted.threshold == 0.01
    assert shifted.statistic > 0
    same = mmd_test(reference, topic.sample(200, rng))
    assert not same.drifted and same.p_value > 0.01


def test_mmd_false_alarms_stay_at_alpha_over_many_unshifted_windows() -> None:
    topic, rng = Topic(3), np.random.default_rng(4)
    alarms = [
        mmd_test(topic.sample(60, rng), topic.sample(60, rng), alpha=0.05, n_permutations=200)
        for _ in range(200)
    ]
    rate = sum(a.drifted for a in alarms) / len(alarms)
    # 200 windows at alpha 0.05: 10 expected; P(more than 17) < 1%
    assert rate <= stats.binom.ppf(0.99, 200, 0.05) / 200
    # and the p-values are roughly uniform (an over-conservative test would also be wrong)
    assert 0.35 < np.mean([a.p_value for a in alarms]) < 0.65


def test_mmd_is_fast_on_full_windows_and_subsamples_larger_ones() -> None:
    topic, rng = Topic(5), np.random.default_rng(6)
    reference, recent = topic.sample(500, rng), topic.sample(500, rng, shift_sd=1.0)
    mmd_test(reference[:50], recent[:50])  # warm BLAS up
    began = time.perf_counter()
    result = mmd_test(reference, recent)
    assert time.perf_counter() - began < 1.0
    assert result.drifted
    big = mmd_test(topic.sample(2000, rng), recent, max_samples=300)
    assert (big.n_reference, big.n_recent) == (300, 300)
    assert mmd_test(reference, recent, seed=1) == mmd_test(reference, recent, seed=1)


def test_mmd_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match="dimensions differ"):
        mmd_test(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="at least two"):
        mmd_test(np.ones((1, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="2-d"):
        mmd_test(np.ones(4), np.ones((3, 4)))


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def questions() -> tuple[Vectors, Vectors]:
    """MiniLM embeddings of SciFact's 300 claims (shuffled: the file is sorted) and of 78
    everyday questions of another kind (tests/data/guardrails/topics)."""
    encoder = OnnxEncoder(ROOT / "models" / "all-MiniLM-L6-v2")
    claims = _texts(ROOT / "bench" / "data" / "scifact" / "queries.jsonl")
    other = _texts(ROOT / "tests" / "data" / "guardrails" / "topics" / "examples.jsonl")
    order = np.random.default_rng(7).permutation(len(claims))
    science = encoder.encode([claims[i] for i in order]).vectors.astype(np.float64)
    return science, encoder.encode(other).vectors.astype(np.float64)


def test_mmd_on_real_embeddings_of_two_question_topics(questions: tuple[Vectors, Vectors]) -> None:
    science, everyday = questions
    reference, later = science[:150], science[150:]
    assert not mmd_test(reference, later).drifted
    # 30 % of the recent window from another topic: 45 of 150 (bench/eval_drift.py: such
    # windows are flagged every time, 20 % in three of four)
    mixed = np.vstack([later[:105], everyday[:45]])
    result = mmd_test(reference, mixed)
    assert result.drifted and result.p_value < 0.005


def test_psi_on_a_hand_computed_example() -> None:
    # bins=2: the reference median 0.5 is the edge. Reference shares (1/2, 1/2), recent
    # (1/4, 3/4): PSI = (1/4 - 1/2) ln(1/2) + (3/4 - 1/2) ln(3/2) = 0.1733 + 0.1014 = 0.2747
    result = psi([0, 0, 1, 1], [0, 1, 1, 1], bins=2)
    assert result.statistic == pytest.approx(0.25 * np.log(2) + 0.25 * np.log(1.5))
    assert result == DriftResult("psi", result.statistic, -1.0, 0.2, True, 4, 4)
    assert psi([0, 0, 1, 1], [1, 0, 1, 0], bins=2).statistic == 0.0


def test_psi_and_ks_on_shifted_and_unshifted_score_samples() -> None:
    rng = np.random.default_rng(8)
    reference, same = groundedness_like(500, rng), groundedness_like(500, rng)
    worse = groundedness_like(500, rng, bad_share=0.3)  # 30 % poorly grounded answers
    assert not psi(reference, same).drifted and psi(reference, same).statistic < 0.1
    assert psi(reference, worse).drifted
    assert not ks_test(reference, same).drifted
    shifted = ks_test(reference, worse)
    assert shifted.drifted and shifted.p_value < 1e-6 and shifted.method == "ks"
    # tied quantiles (the pile at 1.0) merge into one bin: finite, never inf
    assert np.isfinite(psi(reference, np.ones(100)).statistic)
    assert psi(reference, np.ones(100)).drifted


def test_psi_and_ks_false_alarms_over_unshifted_windows() -> None:
    rng = np.random.default_rng(9)
    pairs = [(groundedness_like(300, rng), groundedness_like(300, rng)) for _ in range(200)]
    assert sum(ks_test(a, b, alpha=0.05).drifted for a, b in pairs) / 200 <= 0.05 + 0.035
    assert sum(psi(a, b).drifted for a, b in pairs) == 0  # PSI's 0.2 is far above the noise
