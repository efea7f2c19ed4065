"""Injection and toxicity scanners: quality on the shipped test splits, latency per check.

The injection line also gives its false-positive rate on the held-out generated benign
messages (tests/data/guardrails/injection/SOURCE.md: templates never trained on).

`python bench/guard_classifiers.py` (after `make setup`, which trains the heads into
models/guardrails). Latency is one `scan` on one core: a short question and a
~500-token passage (windows and rules included).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# services/ first: run from bench/, `guardrails` would otherwise be bench/guardrails.py.
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "libs"), str(ROOT)]

import numpy as np  # noqa: E402

from guardrails.classifier import precision_recall_f1  # noqa: E402
from guardrails.multilingual import MultilingualEncoder  # noqa: E402
from guardrails.scanners.base import Scan, ScanInput  # noqa: E402
from guardrails.scanners.injection import InjectionScanner, load_injection_model  # noqa: E402
from guardrails.scanners.toxicity import ToxicityScanner, load_toxicity_model  # noqa: E402
from guardrails.train_classifiers import (  # noqa: E402
    false_positive_rate,
    heldout_benign,
    read_split,
    split_files,
)
from llmops.guardrails.policy import InjectionRule, ToxicityRule  # noqa: E402

MODELS = ROOT / "models" / "guardrails"
SHORT = "Wie viel Eiweiß braucht ein Erwachsener am Tag, und welche Lebensmittel helfen?"
SENTENCE = (
    "Heat pumps move heat from the outside air into the house, and they work best "
    "when the flow temperature of the radiators is kept low. "
)


def _latency(scan: Callable[[ScanInput], Scan], text: str, runs: int) -> dict[str, float]:
    scan(ScanInput(text=text))
    times = []
    for _ in range(runs):
        item = ScanInput(text=text)  # a new request: its memo holds no vectors yet
        start = time.perf_counter()
        scan(item)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}


def evaluate(models_dir: Path = MODELS) -> dict[str, Any]:
    encoder = MultilingualEncoder(models_dir, threads=1)
    scanners: dict[str, Callable[[ScanInput], Scan]] = {
        "injection": InjectionScanner(
            InjectionRule(), load_injection_model(models_dir, encoder)
        ).scan,
        "toxicity": ToxicityScanner(ToxicityRule(), load_toxicity_model(models_dir, encoder)).scan,
    }
    long_text = SENTENCE * 17  # ~510 tokens
    results: dict[str, Any] = {"long_tokens": len(encoder.token_ids([long_text])[0])}
    for task, scan in scanners.items():
        texts, labels = read_split(split_files(task)[1])
        predicted = [scan(ScanInput(text=t)).score >= 0.5 for t in texts]
        results[task] = {
            "rows": len(texts),
            **precision_recall_f1(labels, predicted),
            "short": _latency(scan, SHORT, 200),
            "long": _latency(scan, long_text, 30),
        }
        held = heldout_benign(task)
        if held:
            results[task]["heldout_fp"] = false_positive_rate(scan, held[1])
            results[task]["heldout_rows"] = len(held[1])
    return results


def main() -> None:
    results = evaluate()
    print(
        f"{'scanner':10} {'rows':>5} {'P':>6} {'R':>6} {'F1':>6}  "
        f"{'short p50/p95 ms':>17}  {'~' + str(results['long_tokens']) + '-token p50/p95 ms':>22}"
    )
    for task in ("injection", "toxicity"):
        r = results[task]
        print(
            f"{task:10} {r['rows']:>5} {r['precision']:>6.3f} {r['recall']:>6.3f} {r['f1']:>6.3f}  "
            f"{r['short']['p50_ms']:>8.1f}/{r['short']['p95_ms']:<8.1f}  "
            f"{r['long']['p50_ms']:>11.1f}/{r['long']['p95_ms']:<10.1f}"
        )
        if "heldout_fp" in r:
            print(f"{'':10} held-out benign FP {r['heldout_fp']:.3f} of {r['heldout_rows']} rows")


if __name__ == "__main__":
    main()
