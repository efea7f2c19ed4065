"""The drift detectors' detection and false-alarm rates on shifts of known size.

    .venv/bin/python bench/eval_drift.py            # 100 trials per row (~15 s)
    .venv/bin/python bench/eval_drift.py --quick    # 20 trials per row

1. MMD on synthetic 384-d question embeddings: a topic is unit vectors around a centre
   with noise (two questions of a topic have a cosine of about 0.2, like real questions of
   one field); the recent window's centre is moved by k standard deviations of the noise
   along one direction. k = 0 is the false-alarm rate. Windows of 200 against 200.
2. MMD on real MiniLM embeddings (models/all-MiniLM-L6-v2): reference windows of SciFact
   claims, recent windows with 0 to 40 % everyday questions of another kind
   (tests/data/guardrails/topics) mixed in. Windows of 150 against 150.
3. PSI (>= 0.2) and KS on groundedness-like scores (beta(5, 2), a third exactly 1.0): a
   share of the recent answers replaced by poorly grounded ones (beta(1, 4)). Windows of
   300 against 300.
4. The time of one MMD test on full windows (500 x 500, 384-d, 500 permutations).

Every test runs at alpha = 0.01 (MMD, KS). `bench/evaluation.py` calls `run`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "libs")]

from llmops.evaluation.drift import ks_test, mmd_test, psi  # noqa: E402

DIM = 384
SPREAD = 2.0  # the noise's norm around a topic's centre
ALPHA = 0.01
SHIFTS_SD = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
MIX_SHARES = (0.0, 0.1, 0.2, 0.3, 0.4)
MIX_WINDOW = 150  # SciFact has 300 claims: two disjoint windows
BAD_SHARES = (0.0, 0.05, 0.1, 0.2, 0.3)
Vectors = npt.NDArray[np.float64]


def _unit(v: Vectors) -> Vectors:
    unit: Vectors = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return unit


class Topic:
    """A synthetic question topic in DIM dimensions, and its centre shifted on demand."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.centre = _unit(rng.normal(size=DIM))
        away = rng.normal(size=DIM)
        self.away = _unit(away - (away @ self.centre) * self.centre)

    def sample(self, n: int, rng: np.random.Generator, shift_sd: float = 0.0) -> Vectors:
        """`n` questions; `shift_sd` moves the centre by that many noise sds (per dimension)."""
        sd = SPREAD / np.sqrt(DIM)
        centre = self.centre + shift_sd * sd * self.away
        return _unit(centre + sd * rng.normal(size=(n, DIM)))


def groundedness_like(
    n: int, rng: np.random.Generator, bad_share: float = 0.0
) -> npt.NDArray[np.float64]:
    """Scores in [0, 1] like online groundedness: beta(5, 2) with a third exactly 1.0, and
    `bad_share` of them replaced by poorly grounded answers (beta(1, 4))."""
    scores: npt.NDArray[np.float64] = rng.beta(5, 2, n)
    scores[rng.random(n) < 1 / 3] = 1.0
    bad = rng.random(n) < bad_share
    scores[bad] = rng.beta(1, 4, int(bad.sum()))
    return scores


def synthetic_shifts(trials: int) -> dict[str, float]:
    topic, rng = Topic(1), np.random.default_rng(2)
    return {
        f"mmd_shift_{k:g}sd": _rate(
            mmd_test(topic.sample(200, rng), topic.sample(200, rng, k), alpha=ALPHA).drifted
            for _ in range(trials)
        )
        for k in SHIFTS_SD
    }


def topic_mixing(trials: int) -> dict[str, float]:
    from llmops.encoder import OnnxEncoder

    encoder = OnnxEncoder(ROOT / "models" / "all-MiniLM-L6-v2")
    science = encoder.encode(_texts(ROOT / "bench" / "data" / "scifact" / "queries.jsonl"))
    other = encoder.encode(
        _texts(ROOT / "tests" / "data" / "guardrails" / "topics" / "examples.jsonl")
    )
    claims, everyday = science.vectors, other.vectors
    rng = np.random.default_rng(3)
    figures = {}
    for share in MIX_SHARES:
        k = round(MIX_WINDOW * share)
        drifted: list[bool] = []
        for _ in range(trials):
            picked = rng.permutation(len(claims))
            reference = claims[picked[:MIX_WINDOW]]
            recent = claims[picked[MIX_WINDOW : 2 * MIX_WINDOW - k]]
            mixed = np.vstack([recent, everyday[rng.permutation(len(everyday))[:k]]])
            seed = int(rng.integers(1 << 31))
            drifted.append(mmd_test(reference, mixed, alpha=ALPHA, seed=seed).drifted)
        figures[f"mmd_mix_{round(100 * share)}pct"] = _rate(drifted)
    return figures


def score_shifts(trials: int) -> dict[str, float]:
    rng = np.random.default_rng(4)
    figures = {}
    for share in BAD_SHARES:
        pairs = [
            (groundedness_like(300, rng), groundedness_like(300, rng, share)) for _ in range(trials)
        ]
        pct = round(100 * share)
        figures[f"psi_bad_{pct}pct"] = _rate(psi(a, b).drifted for a, b in pairs)
        figures[f"ks_bad_{pct}pct"] = _rate(ks_test(a, b, alpha=ALPHA).drifted for a, b in pairs)
    return figures


def mmd_latency_ms(repeats: int) -> float:
    topic, rng = Topic(5), np.random.default_rng(6)
    reference, recent = topic.sample(500, rng), topic.sample(500, rng)
    mmd_test(reference, recent)  # warm up BLAS
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        mmd_test(reference, recent)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, float]:
    """Detection rates (a shift of 0 or 0 % is the false-alarm rate) and the MMD time."""
    trials = 20 if quick else 100
    figures: dict[str, float] = {"trials": float(trials), "alpha": ALPHA}
    figures |= synthetic_shifts(trials)
    figures |= topic_mixing(trials)
    figures |= score_shifts(trials)
    figures["mmd_500x500_ms"] = mmd_latency_ms(5 if quick else 20)
    return figures


def _rate(outcomes: Iterable[bool]) -> float:
    values = list(outcomes)
    return sum(values) / len(values)


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]


def print_table(figures: dict[str, float]) -> None:
    trials = int(figures["trials"])
    print(f"\n== Drift detectors: share of {trials} trials flagged (alpha {ALPHA}) ==")
    print(f"{'MMD, synthetic mean shift':34}{'windows 200/200':>18}")
    for k in SHIFTS_SD:
        note = "  (false alarms)" if k == 0 else ""
        print(f"  {f'{k:g} sd':32}{figures[f'mmd_shift_{k:g}sd']:>18.2f}{note}")
    print(f"{'MMD, MiniLM, other topic mixed in':34}{f'windows {MIX_WINDOW}/{MIX_WINDOW}':>18}")
    for share in MIX_SHARES:
        pct = round(100 * share)
        note = "  (false alarms)" if pct == 0 else ""
        print(f"  {f'{pct} %':32}{figures[f'mmd_mix_{pct}pct']:>18.2f}{note}")
    print(f"{'scores, poorly grounded share':34}{'PSI >= 0.2':>12}{'KS':>8}")
    for share in BAD_SHARES:
        pct = round(100 * share)
        psi_rate, ks_rate = figures[f"psi_bad_{pct}pct"], figures[f"ks_bad_{pct}pct"]
        print(f"  {f'{pct} %':32}{psi_rate:>12.2f}{ks_rate:>8.2f}")
    print(f"MMD test, 500 x 500 x 384, 500 permutations: {figures['mmd_500x500_ms']:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 trials per row instead of 100")
    parser.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    figures = run(quick=args.quick)
    print_table(figures)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
